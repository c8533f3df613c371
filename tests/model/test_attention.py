"""GLM's prefix-LM attention mask, on packed rows and against its textbook form."""

import jax.numpy as jnp
import numpy as np

from recsys_jax.model import attention_mask


def test_attention_mask_on_packed_row():
    # Example 1: Part A = slots 0-1, Part B = 2-3. Example 2: Part A = 4, Part B = 5-6. Slot 7 pads.
    segment_ids = jnp.array([[1, 1, 1, 1, 2, 2, 2, 0]])
    part_a = jnp.array([[1, 1, 0, 0, 1, 0, 0, 0]])
    expected = np.array(
        [
            [1, 1, 0, 0, 0, 0, 0, 0],  # Part A sees all of its Part A, nothing of Part B
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],  # Part B: all of Part A, causal in Part B
            [1, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0],  # example 2 never sees example 1
            [0, 0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],  # padding attends nothing
        ],
        bool,
    )
    np.testing.assert_array_equal(attention_mask(segment_ids, part_a)[0], expected)


def test_attention_mask_is_glm_prefix_lm():
    # docs/design.md, GLM: tril(T, T) with the first len(Part A) columns set, then padding removed.
    n_a, n, length = 3, 6, 8
    segment_ids = jnp.array([[1] * n + [0] * (length - n)])
    part_a = jnp.array([[1] * n_a + [0] * (length - n_a)])
    expected = np.tril(np.ones((length, length), bool))
    expected[:, :n_a] = True
    expected[n:, :] = expected[:, n:] = False
    np.testing.assert_array_equal(attention_mask(segment_ids, part_a)[0], expected)
