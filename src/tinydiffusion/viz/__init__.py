"""The lessons' pictures, drawn with Pillow: image grids and page layout (grids.py), line plots (plot.py), the image
figures (figures.py: forward process, denoising diagnostic, trajectory) and the curves (curves.py: schedules, loss)."""
