"""Sample-quality evaluation: metrics on feature vectors (metrics.py), the feature extractors (the project's
classifier, classifier.py / features.py; optional Inception, inception.py), and evaluating samples or a run
(evaluate.py)."""
