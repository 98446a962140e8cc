"""Seeds: one run seed, independent derived streams for data, batches, augmentation and weights."""

import random

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key; streams for different keys are independent."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for a derived stream (per step, so resumed runs draw the same numbers)."""
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Stream identifiers for derive_seed, so no two consumers share random numbers.
DATA, BATCHES, CLEAN_BATCHES, AUGMENT, WEIGHTS, SELECTION, MODEL_INIT, WEIGHT_NET = range(1, 9)
