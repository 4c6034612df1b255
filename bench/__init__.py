"""Side-by-side benchmark of ccm and the upstream Go cloud-controller-manager (issue 8).

``python -m bench --help``; ``make bench``. See bench/README section in the top-level README.
"""
