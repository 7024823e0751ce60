"""The published history: a static web page per history, opened from a file and offline.

``infermatrix publish HISTORY --out SITE`` (commands/publish.py) calls :func:`publish.publish_site`:
page_data.py turns each hardware kind's runs into the page's data (speedups from one run, trends
and change points from reports/history_gate.py), render.py embeds it safely in index.html beside
this package's own app.js and style.css, and copies every run file so that each point links to it.
"""
