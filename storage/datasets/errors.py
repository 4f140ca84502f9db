"""The two ways reading data can fail: the whole dataset, or one sample of it."""


class DatasetError(Exception):
    """The dataset as a whole cannot be used: bad reference, missing path, missing column, duplicate ids."""


class SampleError(Exception):
    """One sample cannot be used; the others still can. Raised by `Dataset.__getitem__`.

    `args` holds (sample_id, message) so the error survives pickling across processes (Ray workers).
    """

    def __init__(self, sample_id: str, message: str):
        super().__init__(sample_id, message)
        self.sample_id = sample_id
        self.message = message

    def __str__(self) -> str:
        return self.message
