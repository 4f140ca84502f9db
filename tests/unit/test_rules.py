"""Every rule of SPEC §1 on tiny hand-computed matrices (expected values worked out in comments)."""

import torch
from attn_audit.models.engine import AttentionEvent, Readout, chefer_rows, propagate_state
from attn_audit.models.engine.rules import gradient_weighted, residual_normalize, rownorm


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def ev(kind, q, k, block, abar):
    """A processed step (event, Ā) for a batch of one; the event's attn is a placeholder."""
    a = abar[None]
    return AttentionEvent(kind, q, k, block, a[:, None]), a


def state_of(steps, sizes):
    return {pair: r[0] for pair, r in propagate_state(steps, sizes, batch=1).items()}


def test_eq5_clamps_each_head_before_the_mean():
    attn = t([[[0.5, 0.5], [0.2, 0.8]], [[1.0, 0.0], [0.5, 0.5]]])[None]
    grad = t([[[1, -1], [2, 0]], [[-1, 3], [1, 1]]])[None]
    # head 0: ∇A⊙A = [[.5,-.5],[.4,0]] -> [[.5,0],[.4,0]];  head 1: [[-1,0],[.5,.5]] -> [[0,0],[.5,.5]]
    # mean: [[.25,0],[.45,.25]]  (averaging first and clamping after would give [[0,0],[.45,.25]])
    assert torch.allclose(gradient_weighted(attn, grad)[0], t([[0.25, 0], [0.45, 0.25]]))


def test_eq6_self_attention_over_two_layers_and_row_path():
    a1, a2 = t([[0, 1], [0, 0]]), t([[0.5, 0.5], [0, 0]])
    # R = I + Ā1 = [[1,1],[0,1]];  R += Ā2 R = [[.5,1],[0,0]]  ->  [[1.5,2],[0,1]]
    steps = [ev("self", "x", "x", 0, a1), ev("self", "x", "x", 1, a2)]
    assert torch.allclose(state_of(steps, {"x": 2})[("x", "x")], t([[1.5, 2], [0, 1]]))
    readout = {"x": Readout.token("x", 0, 2, 1)}
    for fast in (True, False):  # v=[1,0]; v+=vĀ2 -> [1.5,.5]; v+=vĀ1 -> [1.5,2]
        assert torch.allclose(chefer_rows(steps, {"x": 2}, readout, fast_path=fast)["x"][0], t([1.5, 2]))


def test_eq7_self_attention_carries_cross_modal_relevance():
    # cross t->i, Ā=[[0,0],[1,0]] with R̄ = I: R^{ti} = [[0,0],[1,0]]
    # self on t, Ā=[[0,1],[0,0]]: R^{ti} += Ā R^{ti} = [[1,0],[0,0]]  ->  [[1,0],[1,0]]
    steps = [ev("cross", "t", "i", 0, t([[0, 0], [1, 0]])), ev("self", "t", "t", 1, t([[0, 1], [0, 0]]))]
    state = state_of(steps, {"t": 2, "i": 2})
    assert torch.allclose(state[("t", "i")], t([[1, 0], [1, 0]]))
    assert torch.allclose(state[("t", "t")], t([[1, 1], [0, 1]]))


def test_eqs8_9_normalisation_keeps_a_zero_row_at_zero():
    r = t([[2, 1], [0, 1]])[None]  # R−I = [[1,1],[0,0]] -> rownorm [[.5,.5],[0,0]] -> +I
    out = residual_normalize(r)[0]
    assert torch.allclose(out, t([[1.5, 0.5], [0, 1]]))
    assert torch.isfinite(rownorm(torch.zeros(1, 3, 3))).all()


def test_eq10_uses_normalised_self_relevancy_of_both_modalities():
    steps = [
        ev("self", "t", "t", 0, t([[0.5, 0.5], [0, 0]])),  # R^{tt} = [[1.5,.5],[0,1]]
        ev("self", "i", "i", 0, t([[0, 0], [1, 0]])),  # R^{ii} = [[1,0],[1,1]]
        ev("cross", "t", "i", 1, t([[0.2, 0.8], [0.6, 0.4]])),
    ]
    # R̄^{tt} = [[1.5,.5],[0,1]], R̄^{ii} = [[1,0],[1,1]]
    # R̄^{tt}ᵀ Ā = [[1.5,0],[.5,1]] Ā = [[.3,1.2],[.7,.8]];  × R̄^{ii} = [[1.5,1.2],[1.5,.8]]
    state = state_of(steps, {"t": 2, "i": 2})
    assert torch.allclose(state[("t", "i")], t([[1.5, 1.2], [1.5, 0.8]]))
    assert ("i", "t") not in state  # nothing ever flowed from text to image


def test_eq11_adds_the_relevance_that_came_back_through_the_other_modality():
    a_c = t([[0.2, 0.8], [0.6, 0.4]])
    steps = [ev("cross", "i", "t", 0, t([[1, 0], [0, 1]])),  # R^{it} = I
             ev("cross", "t", "i", 1, a_c)]  # Eq. 11: R^{tt} = I + Ā R^{it} = I + Ā
    state = state_of(steps, {"t": 2, "i": 2})
    assert torch.allclose(state[("t", "t")], t([[1.2, 0.8], [0.6, 1.4]]))
    assert torch.allclose(state[("t", "i")], a_c)  # Eq. 10 with R̄^{tt} = R̄^{ii} = I (pre-block)


def test_parallel_block_reads_the_pre_block_state():
    a_x, a_c = t([[1, 0], [0, 1]]), t([[0.2, 0.8], [0.6, 0.4]])
    parallel = state_of([ev("cross", "i", "t", 0, a_x), ev("cross", "t", "i", 0, a_c)], {"t": 2, "i": 2})
    sequential = state_of([ev("cross", "i", "t", 0, a_x), ev("cross", "t", "i", 1, a_c)], {"t": 2, "i": 2})
    # In one block, t->i's Eq. 11 sees R^{it} = 0 (before the block): R^{tt} stays I.
    assert torch.allclose(parallel[("t", "t")], torch.eye(2))
    assert torch.allclose(sequential[("t", "t")], torch.eye(2) + a_c)
    assert torch.allclose(parallel[("i", "t")], a_x) and torch.allclose(parallel[("t", "i")], a_c)


def test_encoder_decoder_cross_attention_then_decoder_self_attention():
    sizes = {"enc": 2, "dec": 2}
    steps = [
        ev("self", "enc", "enc", 0, t([[0, 1], [0, 0]])),  # R^{ee} = [[1,1],[0,1]]
        ev("self", "dec", "dec", 1, t([[0, 0], [1, 0]])),  # R^{dd} = [[1,0],[1,1]]
        # R̄^{dd}ᵀ = [[1,1],[0,1]], R̄^{ee} = [[1,1],[0,1]]: R^{de} = [[1,1],[0,1]] I [[1,1],[0,1]] = [[1,2],[0,1]]
        ev("cross", "dec", "enc", 2, t([[1, 0], [0, 1]])),
        # R^{dd} += Ā R^{dd} -> [[2,1],[1,1]];  R^{de} += Ā R^{de} = [[0,1],[0,0]] -> [[1,3],[0,1]]
        ev("self", "dec", "dec", 3, t([[0, 1], [0, 0]])),
    ]
    state = state_of(steps, sizes)
    assert torch.allclose(state[("dec", "enc")], t([[1, 3], [0, 1]]))
    assert torch.allclose(state[("dec", "dec")], t([[2, 1], [1, 1]]))  # Eq. 11 added nothing
    assert ("enc", "dec") not in state
    readout = {"enc": Readout.token("dec", 0, 2, 1)}
    assert torch.allclose(chefer_rows(steps, sizes, readout)["enc"][0], t([1, 3]))


def test_padding_rows_and_columns_never_receive_relevance():
    # Sample 2 pads token 2: its result must equal the 2-token problem.
    a3 = t([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
    mask = torch.tensor([[True, True, False]])
    masked = a3 * (mask[:, :, None] & mask[:, None, :])
    row3 = chefer_rows([ev("self", "x", "x", 0, masked[0])], {"x": 3}, {"x": Readout.token("x", 0, 3, 1)})["x"]
    row2 = chefer_rows([ev("self", "x", "x", 0, a3[:2, :2])], {"x": 2}, {"x": Readout.token("x", 0, 2, 1)})["x"]
    assert torch.allclose(row3[0, :2], row2[0]) and row3[0, 2] == 0
