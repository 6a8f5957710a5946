"""``saan-hpo report``: gather a study (collect), draw it (figures), write it (page, output, png)."""
