"""The sources' claims decided on the model zoo, image by image.

The package is split by layer:

* :mod:`~bioattn.results.claims` declares the claims as data (the metric that decides each, the
  zoo entries compared, the expected direction, the margin of a claim of no change);
* :mod:`~bioattn.results.stats` holds the paired statistics (McNemar, the paired bootstrap over
  images, Wilcoxon, TOST, Holm, power), numpy, scipy and statsmodels only;
* :mod:`~bioattn.results.records` stores per-image outcomes compactly, with a digest manifest;
* :mod:`~bioattn.results.judge` turns records into verdicts by the rules of the results page;
* :mod:`~bioattn.results.measure` runs the zoo's models to produce the records (torch);
* :mod:`~bioattn.results.page` writes ``docs/results.md`` (``bioattn results``) and checks it
  against the records (``bioattn results --check``).

Nothing is imported here, so the leaves load without torch.
"""
