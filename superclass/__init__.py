"""The front door: the `superclass` command's dispatcher and the end-to-end demo."""
