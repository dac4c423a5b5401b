"""The evaluation report: the ``report.json`` document and its gates (``document``), and what is
made from it: Markdown, one self-contained HTML page with SVG plots, and the page's sections."""
