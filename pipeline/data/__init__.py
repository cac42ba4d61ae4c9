"""Training data at scale: a global window order that does not depend on the number of ranks,
weighted mixtures of data dirs, data dirs on object storage, and validation windows chosen the
same way for any number of ranks. A data dir's names and manifest come from data_prep/shard_format.py
and every read goes through data_prep/storage.py (local paths and fsspec URLs), the writer's own layers.

    order.py           windows of one data dir in a seeded order (a pure function of its manifest)
    mixture.py         which source each window of the global order comes from
    sources.py         opening the data dirs of `data.path` / `data.mix` and checking they agree
    global_batches.py  a rank's micro-batches of global batch s, its shard reads and read-ahead
    data_loader.py     a data dir's manifest and shards, checked
    windows.py         windows cut from joined shards, cached and read ahead: the one reader
    val_windows.py     the validation windows: a fixed, unshuffled slice of the val split, by rank
    prefetch.py        the next batches prepared on a background thread
"""
