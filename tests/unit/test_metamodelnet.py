"""MetaModelNet (NIPS'17): base learner and batched bank, entry blocks, the identity of an untrained
chain, the recursion order, the meta-net's falling loss, and the smoke workflow end to end."""

from __future__ import annotations


from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from longtail.data import DatasetInfo, SplitData
from longtail.device import select_device
from longtail.methods import create_method, make_config
from longtail.methods.metamodelnet import metanet as M
from longtail.methods.metamodelnet.figures import dynamics_points
from longtail.trainer import TrainRun


# --- entry block floor(log2 n), clipped to the chain ----------------------------------------------
def test_entry_block_is_floor_log2_clipped():
    n = [1, 2, 3, 4, 5, 7, 8, 15, 16, 63, 64, 65, 1000, 0]
    assert M.entry_block(np.array(n), 7).tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 6, 6, 0]
    assert M.entry_block(5, 7) == 2 and M.entry_block(1000, 3) == 2
    assert M.entry_block(torch.tensor(n), 7).tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 6, 6, 0]


# --- identity of the untrained chain -------------------------------------------------------------
def test_untrained_chain_is_exactly_the_identity_from_every_entry_block():
    """At init every block's last FC is zero, so f(theta; w_i) = 0 and F_i(theta) = theta exactly,
    in training mode (batch BN statistics) and in eval mode, for every entry block."""
    torch.manual_seed(0)
    chain = M.ResidualChain(9, 4)
    theta = torch.randn(12, 9) * 3
    entry = torch.tensor([0, 1, 2, 3] * 3)
    for mode in (True, False):
        chain.train(mode)
        traj = chain.trajectory(theta, entry)
        assert len(traj) == 5
        for h in traj:
            assert torch.equal(h, theta)
    # a trained-looking last FC breaks it only for rows that pass that block
    with torch.no_grad():
        chain.blocks[1].f[-1].bias.fill_(1.0)
    chain.eval()
    out = chain(theta, entry)
    assert torch.equal(out[entry >= 2], theta[entry >= 2])  # entered after block 1
    assert torch.allclose(out[entry <= 1], theta[entry <= 1] + 1)


# --- recursion order -----------------------------------------------------------------------------
def test_stage_plan_recur_fix_and_regression():
    plan = M.stage_plan(4, "recur")
    assert [s.block for s in plan] == [3, 2, 1, 0]
    assert [s.trainable for s in plan] == [(3,), (2, 3), (1, 2, 3), (0, 1, 2, 3)]
    assert [s.min_k for s in plan] == [8, 4, 2, 1]
    assert [s.threshold for s in plan] == [16, 8, 4, 2]  # t = 2^(i+1)
    fix = M.stage_plan(4, "fix", head_threshold=20)
    assert [s.block for s in fix] == [3, 2, 1, 0] and {s.threshold for s in fix} == {20}
    reg = M.stage_plan(4, "regression")
    assert len(reg) == 1 and reg[0].block is None and reg[0].min_k == 1 and reg[0].threshold == 16


def _toy_data(seed=0, counts=(60, 40, 20, 12, 6, 3), d=6):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 2, (len(counts), d))
    x = np.concatenate([means[c] + rng.normal(0, 1, (n, d)) for c, n in enumerate(counts)]).astype(np.float32)
    y = np.repeat(np.arange(len(counts)), counts)
    return torch.as_tensor(x), y, np.asarray(counts)


def _train_data(num_blocks=3, split="recur", subsets=(6,)):
    x, y, counts = _toy_data()
    mean, scale = M.standardiser(x)
    z = M.augment(x, mean, scale)
    rng = np.random.default_rng(0)
    pool = M.negative_pool(y, 8, rng)
    full = M.draw_subsets(y, [(c, n, 1) for c, n in enumerate(counts)], rng)
    bank = M.draw_subsets(y, M.bank_requests(counts, num_blocks, subsets, split), rng)
    theta, _ = M.fit_bank(z, torch.as_tensor(y), pool, M.BankSpec.concat([full, bank]), 0.01)
    yt = torch.as_tensor(y)
    return M.TrainData(theta[len(full):], torch.as_tensor(bank.model_class), torch.as_tensor(bank.model_k),
                       theta[:len(full)], torch.as_tensor(counts), z, yt)


def test_recursive_training_runs_blocks_back_to_front_and_leaves_earlier_blocks_untouched():
    torch.manual_seed(0)
    data = _train_data()
    chain = M.ResidualChain(data.theta.shape[1], 3)
    snaps = []
    plan = M.stage_plan(3, "recur")
    # train stage by stage, checking after each that blocks before it never moved
    for st in plan:
        before = [{k: v.clone() for k, v in b.state_dict().items()} for b in chain.blocks]
        rows = M.train_metanet(chain, data, [st], M.MetaTrainConfig(steps=5, batch=16))
        snaps.append(rows[0]["block"])
        after = [b.state_dict() for b in chain.blocks]
        for j in range(3):
            changed = any(not torch.equal(before[j][k], after[j][k]) for k in after[j])
            assert changed == (j >= st.block), (st.block, j)
    assert snaps == [2, 1, 0]
    rows = M.train_metanet(M.ResidualChain(data.theta.shape[1], 3), data, plan, M.MetaTrainConfig(steps=3))
    assert [r["block"] for r in rows if r["step"] == 0] == [2, 1, 0]


def test_meta_network_training_loss_falls():
    torch.manual_seed(0)
    data = _train_data()
    chain = M.ResidualChain(data.theta.shape[1], 3)
    # full batch (every bank model each step): the loss of every stage falls
    rows = M.train_metanet(chain, data, M.stage_plan(3, "recur"), M.MetaTrainConfig(steps=60, batch=10_000, lr=3e-3,
                                                                                    log_every=1))
    for block in (2, 1, 0):
        losses = [r["loss"] for r in rows if r["block"] == block]
        assert np.mean(losses[-5:]) < 0.8 * losses[0], (block, losses[:3], losses[-5:])


# --- the bank: shapes, subset sizes, the base learner's objective ------------------------------
def test_bank_requests_follow_the_head_splits():
    counts = [100, 20, 9, 3]
    req = M.bank_requests(counts, 3, [5, 4, 3], "recur")
    # k = 1: n > 2 -> all four; k = 2: n > 4 -> 0, 1, 2; k = 4: n > 8 -> 0, 1, 2
    assert req == [(0, 1, 5), (1, 1, 5), (2, 1, 5), (3, 1, 5), (0, 2, 4), (1, 2, 4), (2, 2, 4),
                   (0, 4, 3), (1, 4, 3), (2, 4, 3)]
    fix = M.bank_requests(counts, 3, [2], "fix", head_threshold=10)
    assert fix == [(0, 1, 2), (1, 1, 2), (0, 2, 2), (1, 2, 2), (0, 4, 2), (1, 4, 2)]


def test_bank_shapes_and_subset_sizes():
    x, y, counts = _toy_data()
    rng = np.random.default_rng(1)
    spec = M.draw_subsets(y, [(0, 1, 4), (0, 8, 3), (4, 4, 2), (5, 10, 1)], rng)
    assert len(spec) == 10
    assert spec.model_k.tolist() == [1] * 4 + [8] * 3 + [4] * 2 + [3]  # k capped at the class size
    assert len(spec.pos_index) == spec.model_k.sum() == len(spec.pos_model)
    for p in range(len(spec)):
        rows = spec.pos_index[spec.pos_model == p]
        assert len(rows) == spec.model_k[p] == len(set(rows.tolist()))  # no repeats inside a subset
        assert (y[rows] == spec.model_class[p]).all()
    z = M.augment(x, *M.standardiser(x))
    pool = M.negative_pool(y, 5, rng)
    assert np.bincount(y[pool]).tolist() == [5, 5, 5, 5, 5, 3]
    theta, info = M.fit_bank(z, torch.as_tensor(y), pool, spec, 0.01, chunk=4)  # chunks of 4 models
    assert theta.shape == (10, x.shape[1] + 1) and info.converged == 1.0


def test_batched_objective_and_gradient_match_the_definition_and_autograd():
    x, y, _ = _toy_data()
    z = M.augment(x, *M.standardiser(x))
    rng = np.random.default_rng(2)
    pool = M.negative_pool(y, 6, rng)
    spec = M.draw_subsets(y, [(1, 3, 2), (5, 2, 1)], rng)
    prob = M.OneVsRestProblem(z, torch.as_tensor(y), pool, spec, l2=0.1)
    theta = torch.randn(3, z.shape[1], dtype=torch.float32, requires_grad=True)
    f, g = prob.value_and_grad(theta.detach())
    for p in range(3):  # J_p by hand: 1/(2k) per positive, 1/(2 n_neg) per negative, l2/2 |w|^2
        pos = z[spec.pos_index[spec.pos_model == p]]
        neg = z[pool[y[pool] != spec.model_class[p]]]
        t = theta[p]
        j = (torch.nn.functional.softplus(-(pos @ t)).mean() / 2 + torch.nn.functional.softplus(neg @ t).mean() / 2
             + 0.05 * (t[:-1] ** 2).sum())
        (gp,) = torch.autograd.grad(j, t)
        assert float(f[p]) == pytest.approx(float(j.detach()), rel=1e-5)
        assert torch.allclose(g[p], gp, atol=1e-6)


@pytest.mark.parametrize("precondition, newton_tail", [(True, 0), (False, 0), (True, 8)])
def test_batched_bank_matches_sklearn_logistic_regression(precondition, newton_tail):
    """Every solver path (per-class preconditioned L-BFGS from the union warm start, plain L-BFGS
    from 0, all rows finished by Newton) reaches scikit-learn's optimum of the same objective."""
    from sklearn.linear_model import LogisticRegression

    x, y, _ = _toy_data()
    z = M.augment(x, *M.standardiser(x))
    rng = np.random.default_rng(3)
    pool = M.negative_pool(y, 10, rng)
    spec = M.draw_subsets(y, [(0, 1, 2), (2, 4, 2), (4, 6, 1)], rng)
    theta, info = M.fit_bank(z, torch.as_tensor(y), pool, spec, 0.05, max_iter=300, tol=1e-6,
                             precondition=precondition, newton_tail=newton_tail)
    assert info.converged == 1.0 and info.max_grad < 1e-6
    for p in range(len(spec)):
        pos = spec.pos_index[spec.pos_model == p]
        neg = pool[y[pool] != spec.model_class[p]]
        xs = np.concatenate([z[pos, :-1], z[neg, :-1]])
        ys = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        sw = np.r_[np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))]
        clf = LogisticRegression(C=20.0, tol=1e-8, max_iter=5000).fit(xs, ys, sample_weight=sw)
        ref = np.r_[clf.coef_[0], clf.intercept_]
        assert np.allclose(theta[p].numpy(), ref, atol=2e-3), (p, theta[p], ref)


def _bank_problem(seed=4, l2=0.02):
    x, y, counts = _toy_data(seed)
    z = M.augment(x, *M.standardiser(x))
    rng = np.random.default_rng(seed)
    pool = M.negative_pool(y, 8, rng)
    spec = M.draw_subsets(y, M.bank_requests(counts, 4, [5], "recur") + [(c, n, 1) for c, n in enumerate(counts)], rng)
    return z, torch.as_tensor(y), pool, spec, l2


def test_hessian_matches_autograd():
    z, y, pool, spec, l2 = _bank_problem()
    prob = M.OneVsRestProblem(z, y, pool, spec, l2)
    theta = torch.randn(prob.P, prob.d) * 0.3
    h = prob.hessian(theta)
    for p in (0, 7, prob.P - 1):  # k = 1, a mid bank model, an all-data model (padded bucket)
        def jp(t, p=p):
            th = theta.clone()
            th[p] = t
            return prob.value_and_grad(th)[0][p]
        ref = torch.autograd.functional.hessian(jp, theta[p])
        assert torch.allclose(h[p], ref, atol=1e-5), p


def test_subset_problem_is_those_rows_of_the_full_problem():
    z, y, pool, spec, l2 = _bank_problem()
    prob = M.OneVsRestProblem(z, y, pool, spec, l2)
    theta = torch.randn(prob.P, prob.d) * 0.3
    f, g = prob.value_and_grad(theta)
    keep = torch.tensor([prob.P - 1, 3, 0, 11])  # any order
    fs, gs = prob.subset(keep).value_and_grad(theta[keep])
    assert torch.allclose(fs, f[keep], atol=1e-6) and torch.allclose(gs, g[keep], atol=1e-6)


def test_union_spec_pools_each_class_positives_and_thins_evenly():
    spec = M.BankSpec(np.array([2, 0, 2]), np.array([2, 1, 3]), np.array([10, 11, 5, 11, 12, 13]),
                      np.array([0, 0, 1, 2, 2, 2]))
    u = M.union_spec(spec)
    assert u.model_class.tolist() == [0, 2] and u.model_k.tolist() == [1, 4]
    assert u.pos_index.tolist() == [5, 10, 11, 12, 13] and u.pos_model.tolist() == [0, 1, 1, 1, 1]
    thin = M.union_spec(spec, max_rows=2)  # rows 10..13 -> the first and the last
    assert thin.model_k.tolist() == [1, 2] and thin.pos_index.tolist() == [5, 10, 13]


def test_solver_paths_reach_the_same_optimum_and_stop_at_tol():
    """Compaction of converged rows, the Newton tail, the preconditioner and the warm start change
    only the path: every variant stops below tol, and the optima agree."""
    z, y, pool, spec, l2 = _bank_problem()
    runs = [M.fit_bank(z, y, pool, spec, l2, max_iter=400, tol=1e-5, **kw) for kw in (
        dict(), dict(precondition=False, newton_tail=0), dict(compact=0.0, newton_tail=0),
        dict(newton_tail=10_000), dict(warm_start=1, warm_rows=3))]
    prob = M.OneVsRestProblem(z, y, pool, spec, l2)
    for theta, info in runs:
        assert info.converged == 1.0 and info.iterations < 400
        assert float(prob.value_and_grad(theta)[1].abs().max()) < 1e-5
        assert torch.allclose(theta, runs[0][0], atol=5e-3)


def test_newton_is_skipped_beyond_its_budget_and_the_plain_path_still_converges():
    """With a zero Newton budget neither the union warm start nor the Newton tail may run."""
    z, y, pool, spec, l2 = _bank_problem()
    calls = []
    orig = M.newton
    try:
        M.newton = lambda *a, **k: calls.append(1) or orig(*a, **k)
        theta, info = M.fit_bank(z, y, pool, spec, l2, max_iter=400, tol=1e-5, newton_budget=0)
        assert not calls and info.converged == 1.0
        M.fit_bank(z, y, pool, spec, l2, max_iter=400, tol=1e-5)
        assert len(calls) >= 1  # the default budget admits the union warm start on this small problem
    finally:
        M.newton = orig


def test_dead_feature_columns_keep_zero_weight_and_change_nothing_else():
    """A feature that is 0 on every row gets weight exactly 0, the rest equals the solve without it."""
    z, y, pool, spec, l2 = _bank_problem()
    z_dead = torch.cat([z[:, :2], torch.zeros(len(z), 1), z[:, 2:]], 1)
    theta, _ = M.fit_bank(z, y, pool, spec, l2, tol=1e-6, max_iter=300)
    theta_d, info = M.fit_bank(z_dead, y, pool, spec, l2, tol=1e-6, max_iter=300)
    assert theta_d.shape == (len(spec), z.shape[1] + 1) and info.converged == 1.0
    assert torch.equal(theta_d[:, 2], torch.zeros(len(spec)))
    assert torch.allclose(torch.cat([theta_d[:, :2], theta_d[:, 3:]], 1), theta, atol=1e-4)


def test_fold_standardisation_gives_the_same_logits_on_raw_features():
    x = torch.randn(7, 4) * 3 + 1
    mean, scale = M.standardiser(x)
    theta = torch.randn(3, 5)
    w, b = M.fold_standardisation(theta, mean, scale)
    assert torch.allclose(x @ w.T + b, M.augment(x, mean, scale) @ theta.T, atol=1e-5)


def test_task_loss_is_cross_entropy_with_the_predicted_row_swapped_in():
    torch.manual_seed(0)
    star = torch.randn(4, 3)
    head = torch.tensor([True, True, False, True])
    z = torch.randn(10, 3)
    y = torch.tensor([0, 1, 3, 0, 1, 3, 0, 1, 3, 3])
    hat = torch.randn(2, 3)
    cls = torch.tensor([1, 3])
    got = M.task_loss(hat, cls, M.head_task(star, head, z, y))
    ymap = torch.tensor([0, 1, -1, 2])[y]
    for b in range(2):
        rows = star[[0, 1, 3]].clone()
        rows[int(torch.tensor([0, 1, -1, 2])[cls[b]])] = hat[b]
        ref = torch.nn.functional.cross_entropy(z @ rows.T, ymap)
        assert float(got[b]) == pytest.approx(float(ref), rel=1e-5)


def test_task_loss_holds_when_one_logit_dominates():
    """The stage-constant leave-one-out logsumexp must not cancel when a head row's logit is far
    above the rest (large theta*): the reference is the CE with the row swapped in, in float64."""
    torch.manual_seed(1)
    star = torch.randn(5, 4) * 40
    head = torch.tensor([True, True, True, False, True])
    z = torch.randn(12, 4)
    y = torch.tensor([0, 1, 2, 4] * 3)
    hat = torch.randn(5, 4) * 40
    cls = torch.tensor([0, 1, 2, 4, 1])
    task = M.head_task(star, head, z, y)
    got = M.task_loss(hat, cls, task)
    cols = torch.tensor([0, 1, 2, -1, 3])
    for b in range(len(cls)):
        rows = star[[0, 1, 2, 4]].double().clone()
        rows[int(cols[cls[b]])] = hat[b].double()
        ref = torch.nn.functional.cross_entropy(z.double() @ rows.T, cols[y])
        assert float(got[b]) == pytest.approx(float(ref), rel=1e-4, abs=1e-3)
    assert torch.isfinite(got).all()


def test_configs_validate_and_name_the_key():
    assert make_config("metamodelnet").split == "recur"
    assert make_config("metamodelnet", {"split": "fix"}).split == "fix"
    assert make_config("metamodelnet", {"split": "regression"}).split == "regression"
    with pytest.raises(ValueError, match="split"):
        make_config("metamodelnet", {"split": "sideways"})
    with pytest.raises(ValueError, match="num_blocks"):
        make_config("metamodelnet", {"num_blocks": 0})
    with pytest.raises(ValueError, match="subsets"):
        make_config("metamodelnet", {"subsets": []})


# --- the method on a frozen parent: Table 2's variants are values of split ------------------------
COUNTS = (40, 12, 5, 2)
SMALL = {"num_blocks": 3, "subsets": [4], "steps": 5, "batch": 16, "negatives_per_class": 8, "solver_iters": 20,
         "task_per_class": 8}


def _parent_and_features() -> tuple[dict, DatasetInfo, dict]:
    info = DatasetInfo(num_classes=len(COUNTS), in_channels=1, class_counts=COUNTS)
    torch.manual_seed(0)
    plain = create_method("plain", {"backbone": "lenet"})
    net = plain.build_model(info)
    parent = {"model": net.state_dict(), "method": "plain", "config": plain.cfg.to_dict(), "info": info.to_dict()}
    rng = np.random.default_rng(0)

    def split(counts):
        y = np.repeat(np.arange(len(counts)), counts)
        x = np.abs(rng.normal(0, 0.3, (len(y), 128))).astype(np.float32)
        x[np.arange(len(y)), y] += 2.0
        return x, y, np.array([f"s{i}" for i in range(len(y))])

    return parent, info, {"train": split(COUNTS), "val": split((3,) * len(COUNTS))}


@pytest.mark.parametrize("split,net_type", [("recur", M.ResidualChain), ("fix", M.ResidualChain),
                                            ("regression", M.Regressor)])
def test_method_on_the_frozen_parent_backbone_builds_the_variant_and_reloads(split, net_type):
    parent, info, feats = _parent_and_features()
    method = create_method("metamodelnet", {**SMALL, "split": split})
    model = method.build_model(info)
    method.init_model(model, parent)
    assert method.cfg.backbone == "lenet"  # resolved from the parent
    assert isinstance(model.head.metanet, net_type)
    assert method.trainable_parameters(model) == list(model.head.metanet.parameters())
    empty = SplitData(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64),
                      np.array([]), "train")
    run = TrainRun(empty, empty, info, select_device("cpu"), 0, Path("unused.pt"), "fp", progress=False,
                   parent_features=feats)
    history = method.fit(model, run)
    assert len(history) == len(M.stage_plan(3, split, 8))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, parent["model"][f"backbone.{key}"]), key
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.head.counts.tolist() == list(COUNTS)
    # infer rebuilds the network from the saved config alone
    again = create_method("metamodelnet", method.cfg.to_dict()).build_model(info)
    again.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))
    if net_type is M.ResidualChain:  # Fig. 4 reads the saved state and config
        pts = dynamics_points(model.state_dict(), method.cfg.to_dict(), feats["train"][0], feats["train"][1],
                              [0, 3], subsets=1)
        assert set(pts["kind"]) == {"model", "target"}


def _run_on(feats, info) -> TrainRun:
    empty = SplitData(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64),
                      np.array([]), "train")
    return TrainRun(empty, empty, info, select_device("cpu"), 0, Path("unused.pt"), "fp", progress=False,
                    parent_features=feats)


def _fitted(params: dict):
    parent, info, feats = _parent_and_features()
    method = create_method("metamodelnet", {**SMALL, **params})
    model = method.build_model(info)
    method.init_model(model, parent)
    history = method.fit(model, _run_on(feats, info))
    return parent, feats, model, history


def test_new_options_validate_and_name_the_key():
    cfg = make_config("metamodelnet")
    assert cfg.apply_metanet is True and cfg.targets == "refit"
    with pytest.raises(ValueError, match="targets 'head'.*'refit', 'backbone_head'"):
        make_config("metamodelnet", {"targets": "head"})
    with pytest.raises(ValueError, match="apply_metanet"):
        make_config("metamodelnet", {"apply_metanet": "no"})


def test_classifier_alone_is_theta_star_for_every_class_and_the_full_method_changes_only_the_tail():
    _, feats, alone, hist = _fitted({"apply_metanet": False})
    _, _, full, _ = _fitted({})
    # the classifier alone: its Linear head is theta* folded onto raw features, row for row
    w, b = M.fold_standardisation(alone.head.theta_star, alone.head.mean, alone.head.scale)
    torch.testing.assert_close(alone.head.weight, w)
    torch.testing.assert_close(alone.head.bias, b)
    assert len(hist) == 1  # no meta-network stages
    # nothing trained: NaN loss and NaN lr, as the training-free methods, which collapse_reason
    # does not read as a divergence
    assert np.isnan(hist["loss"].iloc[0]) and np.isnan(hist["lr"].iloc[0])
    from longtail.metrics import collapse_reason

    ok = pd.DataFrame({"split": ["val", "val", "test", "test"], "label": [0, 1, 0, 1], "pred": [0, 1, 0, 1]})
    assert collapse_reason(ok, 2, hist) is None
    assert not any(p.abs().sum() > 0 for p in alone.head.metanet.blocks[-1].f[-1].parameters())  # untouched
    # the full method keeps the head rows at theta* and replaces the tail rows (n <= 2^3 = 8:
    # classes 2 and 3 with 5 and 2 images) by F(theta_n)
    w, b = M.fold_standardisation(full.head.theta_star, full.head.mean, full.head.scale)
    torch.testing.assert_close(full.head.weight[:2], w[:2])
    assert not torch.allclose(full.head.weight[2:], w[2:], atol=1e-3)


def test_backbone_head_targets_are_the_parent_head_in_standardised_space():
    parent, feats, model, _ = _fitted({"targets": "backbone_head", "apply_metanet": False})
    W, b = parent["model"]["head.weight"], parent["model"]["head.bias"]
    # theta* = [W * scale, b + W mean]: on raw features it is exactly the parent's head
    x = torch.as_tensor(feats["train"][0][:7])
    z = M.augment(x, model.head.mean, model.head.scale)
    torch.testing.assert_close(z @ model.head.theta_star.T, x @ W.T + b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.head(x), x @ W.T + b, rtol=1e-4, atol=1e-4)
    # with the meta-network, the head rows stay the parent's and the tail rows are F(theta_n)
    _, _, full, _ = _fitted({"targets": "backbone_head"})
    torch.testing.assert_close(full.head.weight[:2], W[:2], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(full.head.weight[2:], W[2:], atol=1e-3)


def test_backbone_head_targets_need_a_linear_parent_head():
    parent, info, feats = _parent_and_features()
    parent["model"] = {k: v for k, v in parent["model"].items() if k != "head.bias"}
    method = create_method("metamodelnet", {**SMALL, "targets": "backbone_head"})
    model = method.build_model(info)
    method.init_model(model, parent)
    with pytest.raises(ValueError, match="backbone_head needs a parent with a linear head"):
        method.fit(model, _run_on(feats, info))
