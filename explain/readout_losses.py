"""The training losses a readout's outputs can be scored with, and their curvature (NumPy, float64).

A readout (`explain.readouts`) gives `U` outputs per image. Most are the
class logits (`U = K`) and the loss is named by the model's
`output_activation`:

- `"softmax"`: cross-entropy of the softmax;
- `"sigmoid"`: binary cross-entropy of every class logit against the one-hot
  label, averaged over the `K` classes.

A model that decides in steps can instead expose the scores of its steps:
`GroupedSoftmax` takes a softmax within each group of outputs (the
children of one node of a taxonomy, say) and scores a label by the sum of
the cross-entropies of the groups on its path, so that the class
log-probability is the sum of the chosen outputs' log-softmax values.

Every loss gives, for outputs `s` `(n, U)` and integer labels:
`losses` `(n,)`, `residuals` `dL/ds` `(n, U)`, `class_logits` `(n, K)`,
and its Hessian in the outputs as `diag(d) - sum_i v_i v_iᵀ`
(`curvature` returns `d` `(n, U)` and the `v_i`, each `(n, U)`): the form
`readout_objective.objective_hessian` builds the Gauss-Newton matrix from.
The two named losses are written as their names (strings) everywhere, a
`GroupedSoftmax` as the object; `resolve_loss` turns either into an object.
"""

import json

import numpy as np
from glasszoo.explain.probabilities import probabilities_of

LOSSES = ("softmax", "sigmoid")


class _NamedLoss:
    """A loss on the class logits themselves, named by the model's `output_activation`."""

    def __init__(self, name):
        self.name = name

    def class_logits(self, outputs):
        return np.asarray(outputs, dtype="float64")

    def losses(self, outputs, labels):
        outputs = np.asarray(outputs, dtype="float64")
        rows = np.arange(len(labels))
        if self.name == "softmax":
            shifted = outputs - outputs.max(axis=1, keepdims=True)
            return np.log(np.exp(shifted).sum(axis=1)) - shifted[rows, labels]
        targets = np.zeros_like(outputs)
        targets[rows, labels] = 1.0
        per_class = np.maximum(outputs, 0.0) - outputs * targets + np.log1p(np.exp(-np.abs(outputs)))
        return per_class.mean(axis=1)

    def residuals(self, outputs, labels):
        values = probabilities_of(outputs, self.name)
        values[np.arange(len(labels)), labels] -= 1.0
        return values if self.name == "softmax" else values / outputs.shape[1]

    def curvature(self, outputs, labels=None):
        p = probabilities_of(outputs, self.name)
        if self.name == "softmax":
            return p, [p]
        return p * (1.0 - p) / outputs.shape[1], []


class GroupedSoftmax:
    """A softmax within each group of outputs; a label scores the cross-entropies of the groups on its path.

    With `q` the softmax of the outputs within each group,
    `loss(s, y) = -sum_{u chosen by y} log q_u`, and the class logits are
    `log P(class k) = sum_{u chosen by k} log q_u`. Each label chooses at
    most one output of a group.

    Args:
        groups: int `(U,)` the group of each output.
        chosen: `(K, U)` 1 where label `k` chooses output `u` (the edges on its path).

    Example:
    >>> loss = GroupedSoftmax([0, 0, 1, 1], [[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 0, 0]])
    >>> np.exp(loss.class_logits(np.zeros((1, 4)))).round(3)
    array([[0.25, 0.25, 0.5 ]])
    """

    name = "grouped_softmax"

    def __init__(self, groups, chosen):
        self.groups = np.asarray(groups, dtype="int64").reshape(-1)
        self.chosen = np.asarray(chosen, dtype="float64")
        if self.chosen.ndim != 2 or self.chosen.shape[1] != len(self.groups):
            raise ValueError(f"chosen must be (classes, {len(self.groups)} outputs); got shape {self.chosen.shape}.")
        self.membership = np.eye(int(self.groups.max()) + 1)[self.groups]  # (U, G)
        if np.any(self.chosen @ self.membership > 1):
            raise ValueError("A label may choose at most one output of each group.")
        self.label_groups = self.chosen @ self.membership  # (K, G): the groups on each label's path

    def log_softmax(self, outputs):
        """`(n, U)` each output's log-softmax within its group."""
        outputs = np.asarray(outputs, dtype="float64")
        peak = np.full((len(outputs), self.membership.shape[1]), -np.inf)
        for group in range(self.membership.shape[1]):
            peak[:, group] = outputs[:, self.groups == group].max(axis=1)
        shifted = outputs - peak[:, self.groups]
        return shifted - np.log(np.exp(shifted) @ self.membership)[:, self.groups]

    def class_logits(self, outputs):
        return self.log_softmax(outputs) @ self.chosen.T

    def losses(self, outputs, labels):
        return -np.sum(self.log_softmax(outputs) * self.chosen[labels], axis=1)

    def _on_path(self, outputs, labels):
        """`(n, U)` the within-group softmax, kept on the groups on each label's path (0 elsewhere)."""
        return np.exp(self.log_softmax(outputs)) * (self.label_groups[labels] @ self.membership.T)

    def residuals(self, outputs, labels):
        return self._on_path(outputs, labels) - self.chosen[labels]

    def curvature(self, outputs, labels):
        """Per group on the label's path `diag(q_g) - q_g q_gᵀ`: `(kept q, [kept q of each group])`."""
        kept = self._on_path(outputs, labels)
        return kept, [kept * self.membership[:, group] for group in range(self.membership.shape[1])]

    def to_config(self):
        return {"name": self.name, "groups": self.groups.tolist(), "chosen": self.chosen.astype(int).tolist()}


def resolve_loss(loss):
    """The loss object of `loss`: `"softmax"`, `"sigmoid"`, a loss object, or a `GroupedSoftmax` config (dict or JSON).

    Raises:
        ValueError: naming `loss` when it is none of these.
    """
    if isinstance(loss, (_NamedLoss, GroupedSoftmax)):
        return loss
    if loss in LOSSES:
        return _NamedLoss(loss)
    if isinstance(loss, str) and loss.startswith("{"):
        loss = json.loads(loss)
    if isinstance(loss, dict) and loss.get("name") == GroupedSoftmax.name:
        return GroupedSoftmax(loss["groups"], loss["chosen"])
    raise ValueError(f"The readout's loss must be one of {LOSSES} or a GroupedSoftmax; got {loss!r}.")


def loss_config(loss):
    """A JSON-able form of `loss`: the name of a named loss, a `GroupedSoftmax`'s config as a JSON string."""
    loss = resolve_loss(loss)
    return loss.name if isinstance(loss, _NamedLoss) else json.dumps(loss.to_config())
