"""AdaMix (Wang et al., 2022): a mixture of adapter experts, randomly routed, merged for inference.

Mixture-of-adapters AdaMix replaces the serial adapter of each layer by M adapter experts. Its
training and inference differ:

* **Training** (stochastic routing): every forward pass draws, for each projection of each
  layer, one expert uniformly at random and uses it for the whole batch; the down- and
  up-projections draw independently. The training loss adds a consistency term between two
  such passes (:func:`symmetric_kl`), applied in
  :meth:`autopeft.training.module.PeftLightningModule.training_step`.
* **Evaluation** (adaptation merging): the experts' weights and biases are averaged into one
  adapter, so inference costs one adapter and deploys ``2 D D_h`` weights per layer (plus
  biases) whatever M.

With h the output of the FFN's dense layer and x the FFN input, an AdaMix layer computes::

    out = LayerNorm(dropout(h + f(h)) + x),   f(h) = GELU(h W_down + b_down) W_up + b_up

Source followed: the authors' code, github.com/microsoft/AdaMix —

* ``src/transformers/models/expert_soup.py``: ``MixtureSoup`` (one random expert per call in
  training, ``torch.randint`` batch-wide; at ``inference_level`` 3, ``expert_soup`` averages the
  experts' weights and biases with softmax of a frozen all-zero score vector, i.e. the plain
  mean) and ``ExpertSoup`` (down-projection, GELU, up-projection, plus the residual; with
  ``sharing_up``/``sharing_down`` a projection has a single expert shared by all).
* ``src/transformers/models/bert/modeling_bert.py`` (and ``roberta/modeling_roberta.py``),
  ``BertOutput``: one ``ExpertSoup`` per layer on the FFN output, applied to the dense layer's
  output *before* its dropout; no adapter after the attention block. ``BertPreTrainedModel.
  _init_weights`` initialises every ``nn.Linear`` of the model, the experts included (each on
  its own draw), as N(0, 0.02) with zero bias: AdaMix is *not* the identity at initialisation.
* ``src/transformers/models/roberta/modeling_roberta.py``: ``symmetric_KL_loss`` and its use in
  ``RobertaForSequenceClassification.forward`` (the consistency loss, weight 1).

The experts of one projection are stored stacked, ``weight`` (M, out, in) and ``bias`` (M, out),
instead of the source's list of ``nn.Linear``: the same parameters, and the merge is one mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Standard deviation of the experts' initial weights: BERT's ``initializer_range``, which the
#: source's ``_init_weights`` applies to every linear layer of the model, the experts included.
INIT_STD = 0.02


class ExpertLinear(nn.Module):
    """M linear experts of one shape: a random one per training call, their mean in evaluation.

    Args:
        in_features: Input width.
        out_features: Output width.
        experts: M (1 = a single projection shared by every expert of the adapter).
        init_std: Standard deviation of the initial weights (biases start at zero).

    """

    def __init__(self, in_features: int, out_features: int, experts: int, init_std: float = INIT_STD) -> None:
        super().__init__()
        self.experts = experts
        self.weight = nn.Parameter(torch.empty(experts, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(experts, out_features))
        nn.init.normal_(self.weight, std=init_std)
        #: The expert the last training call used (None after an evaluation call); for inspection.
        self.last_expert: int | None = None

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The averaged weight (out, in) and bias (out): the adaptation merging of inference."""
        if self.experts == 1:
            return self.weight[0], self.bias[0]
        return self.weight.mean(dim=0), self.bias.mean(dim=0)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map (..., in) to (..., out) with a randomly routed expert (training) or the merged one."""
        if self.training:
            # Drawn on the CPU generator, as the source does: no device synchronisation, and
            # pl.seed_everything / torch.manual_seed make the routing reproducible.
            index = int(torch.randint(self.experts, (1,)).item()) if self.experts > 1 else 0
            self.last_expert = index
            return F.linear(hidden, self.weight[index], self.bias[index])
        self.last_expert = None
        weight, bias = self.merged()
        return F.linear(hidden, weight, bias)


class MixtureOfAdapters(nn.Module):
    """AdaMix's mixture of bottleneck adapters: f(h) = GELU(h W_down + b_down) W_up + b_up.

    The residual is added by the caller (:class:`AdaMixFeedForwardOutput`).

    Args:
        hidden_size: D_h.
        bottleneck: D, the bottleneck width of every expert.
        experts: M, the number of adapter experts.
        share_up: One up-projection shared by all experts (the source's ``sharing_up``).
        share_down: One down-projection shared by all experts (``sharing_down``).

    """

    def __init__(self, hidden_size: int, bottleneck: int, experts: int, share_up: bool, share_down: bool) -> None:
        super().__init__()
        self.down = ExpertLinear(hidden_size, bottleneck, 1 if share_down else experts)
        self.up = ExpertLinear(bottleneck, hidden_size, 1 if share_up else experts)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map (..., D_h) to the adapter's update (..., D_h)."""
        return self.up(F.gelu(self.down(hidden)))

    def merged(self) -> MergedAdapter:
        """A plain adapter holding the averaged weights: what AdaMix deploys."""
        with torch.no_grad():
            (down_w, down_b), (up_w, up_b) = self.down.merged(), self.up.merged()
            adapter = MergedAdapter(down_w.shape[1], down_w.shape[0]).to(down_w.device, down_w.dtype)
            adapter.down.weight.copy_(down_w)
            adapter.down.bias.copy_(down_b)
            adapter.up.weight.copy_(up_w)
            adapter.up.bias.copy_(up_b)
        return adapter

    def deployed_params(self) -> int:
        """Parameters of the merged adapter: one down- and one up-projection with biases."""
        down, up = self.down.weight, self.up.weight
        return down[0].numel() + down.shape[1] + up[0].numel() + up.shape[1]


class MergedAdapter(nn.Module):
    """A single AdaMix adapter (the merge of a :class:`MixtureOfAdapters`): GELU bottleneck."""

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map (..., D_h) to the adapter's update (..., D_h)."""
        return self.up(F.gelu(self.down(hidden)))


class AdaMixFeedForwardOutput(nn.Module):
    """Wraps a BERT/RoBERTa ``*Output`` block with AdaMix: LayerNorm(dropout(h + f(h)) + x).

    Same call signature as the block it replaces (``hidden_states`` is the 4 D_h intermediate
    activation, ``input_tensor`` the FFN input x). The adapter acts on the dense layer's output
    before the block's dropout, as in the source's ``BertOutput.forward``.

    Args:
        base: The pretrained output block; shared, not copied.
        mixture: The adapter experts of this layer.

    """

    def __init__(self, base: nn.Module, mixture: MixtureOfAdapters) -> None:
        super().__init__()
        self.base = base
        self.mixture = mixture

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """Compute LayerNorm(dropout(h + f(h)) + x) with h the dense layer's output."""
        hidden = self.base.dense(hidden_states)
        hidden = hidden + self.mixture(hidden)
        return self.base.LayerNorm(self.base.dropout(hidden) + input_tensor)


def symmetric_kl(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """AdaMix's consistency loss between the outputs of two stochastic passes, (B, C) each.

    ``1/2 [KL(sg(q) || p) + KL(sg(p) || q)]`` with p, q the softmax of ``first`` and ``second``
    and sg a stop-gradient: each direction pulls one pass towards the other, held fixed. KL is
    summed over classes and averaged over the batch, in float32 (the source's
    ``symmetric_KL_loss``, reduction ``batchmean``).
    """
    first, second = first.float(), second.float()
    forward = F.kl_div(F.log_softmax(first, dim=-1), F.softmax(second.detach(), dim=-1), reduction="batchmean")
    backward = F.kl_div(F.log_softmax(second, dim=-1), F.softmax(first.detach(), dim=-1), reduction="batchmean")
    return 0.5 * (forward + backward)


def mixtures(model: nn.Module) -> list[MixtureOfAdapters]:
    """The AdaMix mixtures inside ``model``, in module order (empty when AdaMix is off)."""
    return [m for m in model.modules() if isinstance(m, MixtureOfAdapters)]
