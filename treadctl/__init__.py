"""treadctl: safe forward/reverse treadmill sessions over FTMS."""

__version__ = "0.1.0"
