"""crystal-watchd: a watched-folder daemon for Clarity AI's Crystal Upscaler on fal."""

__version__ = "0.4.0"
