"""The lab: a local web page (`tinydiffusion lab`) for the course's widgets and live sampling.

Standard library only (http.server + server-sent events): nothing to install, no CDN assets, no Node build step;
the page is plain HTML/JS/CSS in static/. server.py routes requests; forward.py, sampling.py and runinfo.py answer
them with library functions (paths.py, process.py, runs.py, viz/), never the CLI.
"""
