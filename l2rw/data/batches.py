"""Mini-batch index streams that are pure functions of (seed, step), so a resumed run sees the
same batches as an uninterrupted one without saving sampler state."""

import torch

from l2rw.seeding import generator


class EpochStream:
    """Shuffled passes over n items, dropping the last partial batch; batch > n gives all n."""

    def __init__(self, n: int, batch_size: int, seed: int, stream: int) -> None:
        if n == 0:
            raise ValueError("cannot draw batches from an empty split")
        self.n, self.batch = n, min(batch_size, n)
        self.seed, self.stream = seed, stream
        self.per_epoch = n // self.batch
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=generator(self.seed, self.stream, epoch))
        return self._perm[pos * self.batch : (pos + 1) * self.batch]


class BalancedStream:
    """Class-balanced batches: batch_size / K examples of each class, with replacement."""

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int, stream: int) -> None:
        labels = labels.cpu()
        self.by_class = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
        self.per_class = max(1, batch_size // len(self.by_class))
        self.seed, self.stream = seed, stream

    def __call__(self, step: int) -> torch.Tensor:
        gen = generator(self.seed, self.stream, step)
        picks = [
            members[torch.randint(len(members), (self.per_class,), generator=gen)]
            for members in self.by_class
        ]
        return torch.cat(picks)


class ReplacementStream:
    """batch_size items drawn uniformly with replacement every step (a batch may exceed n)."""

    def __init__(self, n: int, batch_size: int, seed: int, stream: int) -> None:
        if n == 0:
            raise ValueError("cannot draw batches from an empty split")
        self.n, self.batch = n, batch_size
        self.seed, self.stream = seed, stream

    def __call__(self, step: int) -> torch.Tensor:
        gen = generator(self.seed, self.stream, step)
        return torch.randint(self.n, (self.batch,), generator=gen)


# train.meta_sampling -> how the meta (clean) batches are drawn.
META_STREAMS = {"epochs": EpochStream, "replacement": ReplacementStream}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // min(batch_size, n))
