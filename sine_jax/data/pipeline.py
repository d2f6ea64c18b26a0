"""Input pipeline: training batches (grain) and evaluation arrays, from `SequenceData`.

Training examples: every position t >= 1 of each user's training sequence (`SequenceData.
train_bounds`: leave-one-out, all but the last two items; held-out users, the whole sequence
of a training user) predicts item t from the up-to-n items before it. Examples are enumerated
user by user, position by position: example e of user u (u's examples are example_offsets[u]
.. example_offsets[u+1]-1) is position t = e - example_offsets[u] + 1.

The training stream is infinite: epoch 0's examples in a shuffled order, then epoch 1's in
another order, and so on; batch `s` holds stream positions s*B .. s*B+B-1 (so a batch may
straddle two epochs, exactly like `range(E).shuffle().repeat().batch(B)`; no example is ever
dropped). The per-epoch order is a keyed pseudo-random permutation of 0..E-1 (`permute`: a
Feistel network with cycle walking, keyed by (seed, epoch)), evaluated for a batch with numpy:
O(1) memory, no per-example Python. Batch s is a pure function of s, so the grain iterator's
state is just the next step and `get_state()` / `set_state()` resume exactly. In a
multi-process run each process reads and batches only its rows of every batch (`rows`).

Shapes: B batch, n history length (max_seq_len), U users evaluated, H longest evaluation input,
T most (distinct) targets of a held-out user.
Histories are left-padded with 0: the most recent item is always at position n-1.
"""

import dataclasses
import sys

import grain
import numpy as np

from sine_jax.data.dataset import INPUT_FRACTION, TEST, VALID, SequenceData
from sine_jax.errors import DataError

_FEISTEL_ROUNDS = 6  # half-rounds, alternating which half is updated
SPLITS = ("valid", "test")
# A batch costs well under a millisecond of numpy; a few prefetch threads overlap it with the
# training step, more only contend for the GIL (grain's default of 16 threads was 2-3x slower).
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)


def num_train_examples(data: SequenceData) -> int:
    """Sum over users of max(len(train_sequence) - 1, 0): the examples of one epoch."""
    return int(_example_offsets(data)[-1])


def make_train_dataset(data: SequenceData, *, max_seq_len: int, batch_size: int,
                       seed: int, rows: tuple[int, int] | None = None) -> grain.IterDataset:
    """The infinite, shuffled stream of training batches, or of `rows` of each.

    One epoch = `num_train_examples(data) // batch_size` batches (the stream carries the
    remainder over into the next batch, it never drops an example).

    Args:
        data: the dataset.
        max_seq_len: n, the history length.
        batch_size: B, the global batch.
        seed: the shuffle seed (>= 0); the same seed gives the same stream.
        rows: (start, stop): only these rows of each global batch are read and batched (a
            process's share in a multi-process run, `sharding.local_rows`); None = all B.

    Returns:
        A grain IterDataset of dict(history=int32 [b, n], target=int32 [b]), b = stop - start
        (B for all rows); its iterator supports get_state() / set_state().

    Raises:
        ValueError: max_seq_len or batch_size < 1, seed < 0, or rows not within 0..B.
        DataError: no training example at all.
    """
    start, stop = (0, batch_size) if rows is None else rows
    if max_seq_len < 1 or batch_size < 1 or seed < 0 or not 0 <= start < stop <= batch_size:
        raise ValueError(f"need max_seq_len >= 1, batch_size >= 1, seed >= 0, rows within "
                         f"0..B; got {max_seq_len}, {batch_size}, {seed}, rows {rows}")
    example_offsets = _example_offsets(data)
    if example_offsets[-1] == 0:
        raise DataError(f"{data.summary.get('source', 'dataset')}: no training examples: every "
                        f"user's training sequence has a single item (4+ interactions needed)")
    batches = _TrainBatches(items=data.items, user_starts=data.train_bounds()[0],
                            example_offsets=example_offsets, max_seq_len=max_seq_len,
                            batch_size=batch_size, seed=seed, row_start=start, row_stop=stop)
    steps = grain.MapDataset.range(sys.maxsize // batch_size)  # "infinite"; no int64 overflow
    return steps.map(batches).to_iter_dataset(_READ_OPTIONS)


def eval_arrays(data: SequenceData, split: str, *, max_seq_len: int) -> dict[str, np.ndarray]:
    """Inputs and targets of the evaluated users, for `data.split`'s protocol.

    leave_one_out (every user): the input sequence is the training sequence for "valid", and
    the training sequence plus the validation target for "test"; one target.
    held_out_users (the users of that split): the input is the first floor(0.8 len) items, the
    targets are the distinct items of the rest, in order of first occurrence.

    Args:
        data: the dataset.
        split: "valid" or "test".
        max_seq_len: n.

    Returns:
        history: int32 [U, n], the last n input items, left-padded with 0.
        exclude: int32 [U, H], every item of the input sequence (not only the last n), then
            0s; for held_out_users without the user's targets; H = the longest list (>= 1).
        leave_one_out:
            target: int32 [U] (`metrics.target_ranks` never excludes it).
        held_out_users:
            targets: int32 [U, T], left-aligned, 0-padded; T = the most targets (>= 1).
            target_mask: bool [U, T], targets > 0.
            users: int64 [U], the evaluated users' indices in `data` (rows of `offsets`).
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed: {', '.join(SPLITS)}")
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len={max_seq_len}; need >= 1")
    if data.split == "held_out_users":
        return _held_out_arrays(data, split, max_seq_len)
    starts = data.offsets[:-1]
    input_lengths = np.diff(data.offsets) - (2 if split == "valid" else 1)
    ends = starts + input_lengths
    width = int(input_lengths.max())
    columns = np.arange(width)
    exclude_index = np.minimum(starts[:, None] + columns, len(data.items) - 1)  # [U, H]
    exclude = np.where(columns < input_lengths[:, None], data.items[exclude_index], 0)
    return {
        "history": _histories(data.items, starts, ends, max_seq_len),
        "target": data.items[ends].astype(np.int32),
        "exclude": exclude.astype(np.int32),
    }


def _held_out_arrays(data: SequenceData, split: str, n: int) -> dict[str, np.ndarray]:
    users = np.flatnonzero(data.user_split == (VALID if split == "valid" else TEST))
    starts, lengths = data.offsets[users], np.diff(data.offsets)[users]
    input_lengths = np.floor(lengths * INPUT_FRACTION).astype(np.int64)  # ComiRec: int(0.8 len)
    ends = starts + input_lengths
    # Targets: (row, item) pairs of the rest of each sequence, first occurrences only.
    target_rows = np.repeat(np.arange(len(users)), lengths - input_lengths)
    target_items = data.items[_ranges(ends, starts + lengths)]
    key = target_rows * (data.num_items + 1) + target_items
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    targets = _pad_rows(target_rows[first], target_items[first], len(users))
    input_rows = np.repeat(np.arange(len(users)), input_lengths)
    input_items = data.items[_ranges(starts, ends)]
    not_target = ~np.isin(input_rows * (data.num_items + 1) + input_items, key[first])
    return {
        "history": _histories(data.items, starts, ends, n),
        "targets": targets,
        "target_mask": targets > 0,
        "exclude": _pad_rows(input_rows[not_target], input_items[not_target], len(users)),
        "users": users.astype(np.int64),
    }


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """int64 [sum(ends - starts)]: the concatenated ranges starts[i]..ends[i]-1."""
    lengths = ends - starts
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.arange(int(lengths.sum())) - offsets


def _pad_rows(rows: np.ndarray, values: np.ndarray, num_rows: int) -> np.ndarray:
    """int32 [R, W]: `values` of each row (rows ascending), left-aligned, 0-padded; W >= 1."""
    counts = np.bincount(rows, minlength=num_rows)
    out = np.zeros((num_rows, max(int(counts.max(initial=0)), 1)), np.int32)
    columns = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, columns] = values
    return out


def _example_offsets(data: SequenceData) -> np.ndarray:
    """[U+1] int64: user u's examples are example_offsets[u] .. example_offsets[u+1]-1."""
    starts, ends = data.train_bounds()
    per_user = np.maximum(ends - starts - 1, 0)
    return np.concatenate([[0], np.cumsum(per_user)]).astype(np.int64)


def _histories(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """int32 [B, n]: items[max(start, end - n):end] of each row, left-padded with 0."""
    columns = ends[:, None] - n + np.arange(n)  # [B, n]
    history = np.where(columns >= starts[:, None], items[np.maximum(columns, 0)], 0)
    return history.astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class _TrainBatches:
    """step -> rows row_start..row_stop-1 of the training batch of that step (a pure
    function, see the module docstring)."""

    items: np.ndarray  # [N] int32
    user_starts: np.ndarray  # [U] int64
    example_offsets: np.ndarray  # [U+1] int64
    max_seq_len: int
    batch_size: int  # B, the global batch
    seed: int
    row_start: int  # the rows of each global batch read here
    row_stop: int

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        num_examples = int(self.example_offsets[-1])
        position = step * self.batch_size + np.arange(self.row_start, self.row_stop,
                                                      dtype=np.int64)
        epoch, index = np.divmod(position, num_examples)
        example = np.empty_like(index)
        for e in np.unique(epoch):  # usually one epoch, two at an epoch boundary
            in_epoch = epoch == e
            example[in_epoch] = permute(index[in_epoch], num_examples, self.seed, int(e))
        user = np.searchsorted(self.example_offsets, example, side="right") - 1
        target_pos = self.user_starts[user] + (example - self.example_offsets[user]) + 1
        return {
            "history": _histories(self.items, self.user_starts[user], target_pos,
                                  self.max_seq_len),
            "target": self.items[target_pos].astype(np.int32),
        }


def permute(index: np.ndarray, n: int, seed: int, epoch: int) -> np.ndarray:
    """A keyed pseudo-random permutation of 0..n-1, applied to `index` (vectorised).

    An unbalanced Feistel network on the bits of n-1 (so its domain is < 2n): each round
    XORs one half with a keyed hash of the other, a bijection; outputs >= n are permuted again
    (cycle walking), which makes the whole a bijection of 0..n-1.

    Args:
        index: int64 [K] values in 0..n-1.
        n: the size of the permuted range (>= 1).
        seed: shuffle seed (>= 0).
        epoch: epoch number (>= 0); each epoch has its own permutation.

    Returns:
        int64 [K], the permuted values.
    """
    bits = max(2, (n - 1).bit_length())
    high_bits, low_bits = bits // 2, bits - bits // 2
    low_mask = np.uint64((1 << low_bits) - 1)
    keys = np.random.SeedSequence([seed, epoch]).generate_state(_FEISTEL_ROUNDS, np.uint64)

    def rounds(x):
        high, low = x >> np.uint64(low_bits), x & low_mask
        for i, key in enumerate(keys):
            if i % 2:
                low ^= _hash(high, key, low_bits)
            else:
                high ^= _hash(low, key, high_bits)
        return (high << np.uint64(low_bits)) | low

    value = rounds(index.astype(np.uint64))
    outside = value >= n
    while outside.any():
        value[outside] = rounds(value[outside])
        outside = value >= n
    return value.astype(np.int64)


def _hash(x: np.ndarray, key: np.uint64, out_bits: int) -> np.ndarray:
    """The top `out_bits` bits of a keyed multiply-xorshift-multiply hash of uint64 values."""
    x = (x ^ key) * np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(32))) * np.uint64(0xBF58476D1CE4E5B9)
    return x >> np.uint64(64 - out_bits)
