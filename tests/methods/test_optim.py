"""Strictly sparse optimizers: only selected rows move, and they move like the dense rule."""

import pytest
import torch

from smf.optim import LazyAdam, RowwiseAdagrad, SparseSGD, selected_gradient


def sparse_grad(index, values, n):
    return torch.sparse_coo_tensor(torch.tensor([index]), values, (n, values.shape[1]), check_invariants=True)


def test_selected_gradient_sums_uncoalesced_repeats():
    values = torch.arange(12.0).view(4, 3)
    grad = sparse_grad([5, 2, 5, 7], values, 10)
    out = selected_gradient(grad, torch.tensor([2, 5]))
    torch.testing.assert_close(out, torch.stack([values[1], values[0] + values[2]]))
    assert torch.equal(selected_gradient(grad.to_dense(), torch.tensor([2, 5])), out)


def test_sgd_updates_only_selected_rows():
    w = torch.nn.Parameter(torch.randn(10, 3))
    start = w.detach().clone()
    opt = SparseSGD([w], lr=0.5)
    w.grad = sparse_grad([1, 4, 4, 8], torch.ones(4, 3), 10)
    opt.set_rows({w: torch.tensor([4, 8])})
    opt.step()
    expected = start.clone()
    expected[4] -= 0.5 * 2
    expected[8] -= 0.5
    assert torch.equal(w.detach(), expected)
    assert opt.last_stats["rows_selected"] == 2 and opt.last_stats["rows_changed"] == 2


def test_lazy_adam_matches_dense_adam_per_row():
    """A row selected on steps {0, 2, 3} follows torch Adam fed only those 3 gradients."""
    torch.manual_seed(0)
    n, d, steps = 6, 4, 4
    w = torch.nn.Parameter(torch.randn(n, d))
    start = w.detach().clone()
    grads = [torch.randn(n, d) for _ in range(steps)]
    chosen = [[0, 3], [3], [0, 3, 5], [0]]
    opt = LazyAdam([w], lr=0.1, betas=(0.8, 0.9), eps=1e-6)
    for g, rows in zip(grads, chosen):
        w.grad = g.to_sparse(1)
        opt.set_rows({w: torch.tensor(rows)})
        opt.step()
    for row in range(n):
        ref = torch.nn.Parameter(start[row].clone())
        ref_opt = torch.optim.Adam([ref], lr=0.1, betas=(0.8, 0.9), eps=1e-6)
        for g, rows in zip(grads, chosen):
            if row in rows:
                ref.grad = g[row].clone()
                ref_opt.step()
        torch.testing.assert_close(w[row].detach(), ref.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(w[1].detach(), start[1]) and torch.equal(w[2].detach(), start[2])
    assert opt.rows_with_state() == 3


def test_lazy_adam_state_grows_with_rows_not_table():
    for n in (1024, 1 << 16):
        w = torch.nn.Parameter(torch.zeros(n, 8))
        opt = LazyAdam([w], lr=1.0)
        w.grad = torch.ones(n, 8).to_sparse(1)
        opt.set_rows({w: torch.arange(10)})
        opt.step()
        # in use: index (N int64) + moments and step of the 10 rows used
        assert opt.used_state_bytes() == n * 8 + 10 * (8 * 8 + 8)
        # allocated: the buffers' capacity (64 rows at first), plus the used-counter
        assert opt.state_bytes() == n * 8 + 64 * (8 * 8 + 8) + 8
        assert opt.state_bytes() == sum(t.nbytes for t in opt.state[w].values())


def test_lazy_adam_state_dict_round_trip():
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(50, 4))
    w2 = torch.nn.Parameter(w1.detach().clone())
    o1, o2 = LazyAdam([w1], lr=0.3), LazyAdam([w2], lr=0.3)
    grads = [torch.randn(50, 4) for _ in range(6)]
    rows = [torch.randperm(50)[:7].sort().values for _ in range(6)]
    for i in range(3):
        w1.grad = grads[i].to_sparse(1)
        o1.set_rows({w1: rows[i]})
        o1.step()
    o2.load_state_dict(o1.state_dict())
    w2.data.copy_(w1.data)
    for i in range(3, 6):
        for w, o in ((w1, o1), (w2, o2)):
            w.grad = grads[i].to_sparse(1)
            o.set_rows({w: rows[i]})
            o.step()
    assert torch.equal(w1, w2)


@pytest.mark.parametrize("make", [lambda p: SparseSGD(p, lr=1.0, max_grad_norm=1.0), lambda p: LazyAdam(p, lr=1.0, max_grad_norm=1.0)])
def test_clipping_uses_the_selected_rows_norm(make):
    a = torch.nn.Parameter(torch.zeros(5, 2))
    b = torch.nn.Parameter(torch.zeros(5, 2))
    opt = make([a, b])
    a.grad = torch.full((5, 2), 3.0).to_sparse(1)
    b.grad = torch.full((5, 2), 4.0).to_sparse(1)
    opt.set_rows({a: torch.tensor([0]), b: torch.tensor([2])})
    opt.step()
    assert opt.last_stats["grad_norm"] == pytest.approx((2 * 9 + 2 * 16) ** 0.5)
    assert a[1:].abs().sum() == 0 and b[[0, 1, 3, 4]].abs().sum() == 0


def test_sgd_applies_the_clip_scale():
    """The clipped step is the gradient times max_norm / norm (a mutant that skips the scale fails)."""
    w = torch.nn.Parameter(torch.zeros(4, 2))
    opt = SparseSGD([w], lr=1.0, max_grad_norm=1.0)
    w.grad = torch.tensor([[3.0, 4.0], [0, 0], [0, 0], [0, 0]]).to_sparse(1)  # norm 5
    opt.set_rows({w: torch.tensor([0])})
    opt.step()
    torch.testing.assert_close(w.detach()[0], torch.tensor([-0.6, -0.8]), atol=1e-6, rtol=0)
    w2 = torch.nn.Parameter(torch.zeros(4, 2))
    opt2 = SparseSGD([w2], lr=1.0, max_grad_norm=10.0)  # under the limit: no scaling
    w2.grad = torch.tensor([[3.0, 4.0], [0, 0], [0, 0], [0, 0]]).to_sparse(1)
    opt2.set_rows({w2: torch.tensor([0])})
    opt2.step()
    assert torch.equal(w2.detach()[0], torch.tensor([-3.0, -4.0]))


def test_lazy_adam_clipped_first_step_is_unchanged_but_decay_is_applied():
    """Adam's first step is lr·sign(g) whatever the scale; weight decay shrinks the selected
    rows by (1 - lr·wd) and no other row (decoupled, as AdamW, but lazy)."""
    w = torch.nn.Parameter(torch.ones(3, 2))
    opt = LazyAdam([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.tensor([[1.0, -2.0], [0, 0], [0, 0]]).to_sparse(1)
    opt.set_rows({w: torch.tensor([0])})
    opt.step()
    reference = torch.nn.Parameter(torch.ones(1, 2))
    dense = torch.optim.AdamW([reference], lr=0.1, weight_decay=0.5)
    reference.grad = torch.tensor([[1.0, -2.0]])
    dense.step()
    torch.testing.assert_close(w.detach()[0], reference.detach()[0])
    assert torch.equal(w.detach()[1:], torch.ones(2, 2))


def test_rowwise_adagrad_follows_its_rule_and_keeps_one_float_per_row():
    from smf.optim import RowwiseAdagrad

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 3))
    start = w.detach().clone()
    opt = RowwiseAdagrad([w], lr=0.5)
    grads = [torch.randn(6, 3) for _ in range(3)]
    rows = [torch.tensor([0, 2]), torch.tensor([2]), torch.tensor([0, 5])]
    expected, total = start.clone(), torch.zeros(6)
    for g, r in zip(grads, rows):
        w.grad = g.to_sparse(1)
        opt.set_rows({w: r})
        opt.step()
        total[r] += g[r].pow(2).mean(dim=1)
        expected[r] -= 0.5 * g[r] / (total[r].sqrt() + 1e-8)[:, None]
    torch.testing.assert_close(w.detach(), expected)
    assert torch.equal(w.detach()[[1, 3, 4]], start[[1, 3, 4]])  # never selected: untouched
    assert opt.state_bytes() == 6 * 4
    loaded = RowwiseAdagrad([torch.nn.Parameter(start.clone())], lr=0.5)
    loaded.load_state_dict(opt.state_dict())
    assert torch.equal(loaded.state[loaded.param_groups[0]["params"][0]]["sum"], total)


@pytest.mark.parametrize("make", [lambda p: SparseSGD(p, lr=0.5), lambda p: LazyAdam(p, lr=0.5, weight_decay=0.1),
                                  lambda p: RowwiseAdagrad(p, lr=0.5)])
def test_rows_not_valid_step_as_rows_not_selected(make):
    """A fixed-shape selection hands the optimizer t rows and a valid mask: the invalid rows keep their bits and
    their state (lazy Adam: moments and step count; a row without state gets none)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 3))
    opt = make([w])
    w.grad = torch.randn(8, 3).to_sparse(1)
    opt.set_rows({w: torch.tensor([1, 2])})
    opt.step()  # rows 1 and 2 have state now
    state = {k: v.clone() for k, v in opt.state[w].items()} if opt.state[w] else {}
    start = w.detach().clone()
    w.grad = torch.randn(8, 3).to_sparse(1)
    opt.set_rows({w: torch.tensor([1, 2, 5, 6])}, {w: torch.tensor([False, True, True, False])})
    opt.step()
    moved = (w.detach() != start).any(-1)
    assert moved.tolist() == [False, False, True, False, False, True, False, False]
    assert opt.read_stats()["rows_selected"] == 2 == opt.read_stats()["rows_changed"]
    if isinstance(opt, LazyAdam):
        slot = opt.state[w]["slot"]
        assert slot[6] < 0 and slot[5] >= 0 and opt.rows_with_state() == 3
        for key in ("m", "v", "step"):
            assert torch.equal(opt.state[w][key][slot[1]], state[key][state["slot"][1]]), key
    if isinstance(opt, RowwiseAdagrad):
        assert opt.state[w]["sum"][[1, 6]].tolist() == state["sum"][[1, 6]].tolist()
