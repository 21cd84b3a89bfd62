"""cns_ros: label-free LiDAR/camera semantic segmentation from vision foundation models.

Importing this package is cheap: it imports neither torch, rclpy, open_clip nor
segment_anything. Heavy dependencies are imported inside the modules that use them.
"""

__version__ = '0.1.0'
