"""The method on arrays (layer 1, above ``kernels``): the array backend, input checks,
normalisation, the partial distance, partial k-means, completion from the centres, the row
sources and the one fit (docs/method.md). Nothing here knows files, estimators or clusters.
"""
