"""The segmentation sample app (loaded by path: see server/apploader.py)."""
