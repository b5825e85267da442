"""`superclass demo`: the whole chain on synthetic data, on CPU, in minutes; one module per stage.

`config` (settings, image size, held-out images), `pretrain` (the two encoders and their checks), `probes`,
`lit`, `caption` (ClipCap), `vlm` (LLaVA training, scoring and baselines), `gallery` (held-out images with each
encoder's caption and answers), `report` (tables, plots) and `markdown_html` (report.html), `run` (the CLI).
The top floor: it may import every package, and no other package imports it.
"""
