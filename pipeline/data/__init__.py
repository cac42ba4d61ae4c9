"""Training data at scale: a global window order that does not depend on the number of ranks,
weighted mixtures of data dirs, and data dirs on object storage.

    order.py           windows of one data dir in a seeded order (a pure function of its manifest)
    mixture.py         which source each window of the global order comes from
    sources.py         opening the data dirs of `data.path` / `data.mix` and checking they agree
    global_batches.py  a rank's micro-batches of global batch s, its shard reads and read-ahead
    remote.py          local paths and fsspec URLs behind one small reading interface
    batch_log.py       an optional record of the windows each rank trained on (for checks)
    data_loader.py     a data dir's manifest and shards, checked; the validation token stream
    prefetch.py        the next batches prepared on a background thread
"""
