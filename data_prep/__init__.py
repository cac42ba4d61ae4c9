"""Build a training data dir: tokenize a text corpus with Ray and shard it into WebDataset tars.

`python -m data_prep [--config FILE] data.key=value ...`; the format it writes is described in
`data_prep.manifest` and read by `pipeline.data.data_loader`.
"""
