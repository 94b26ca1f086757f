"""Runnable launchers (``scalinglab.scripts``); also ``python -m scalinglab.launch_local|launch_tpu``."""
