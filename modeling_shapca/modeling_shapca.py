"""Shap-CA models: the shared multimodal encoder and the task heads.

`ShapCAModel` runs the text encoder once over `[CLS] text [SEP] context [SEP]` (Eq. 1), the
image encoder (Eq. 2), the Shapley contrastive alignment (Eqs. 4-7), the adaptive fusion
(Eqs. 8-11), and embeds part-of-speech tags and word positions (section 3.6).
`ShapCAForTokenClassification` adds MLP1 and a CRF for MNER (Eqs. 12-13);
`ShapCAForWordPairExtraction` the word-pair contrastive layer for MRE and MJERE (Eqs. 14-18).
Inference from raw text and images lives in `pipeline_shapca.py`; `predict` is a thin
convenience over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .alignment import CapturedAlignment, ShapleyGames, alignment_loss
from .captured import CapturedTokenHead
from .configuration_shapca import ShapCAConfig
from .crf import LinearChainCRF, bio_constraints
from .fusion import AdaptiveFusion
from .tasks import get_task
from .word_pair import WordPairContrastiveLayer, grid_predictions, word_pair_loss
from .grids import IGNORE_INDEX


@dataclass
class ShapCAModelOutput(ModelOutput):
    """Output of `ShapCAModel`.

    Args:
        word_features: `M_t`, `(batch, n_words, fusion_dim)` image-aware word features (Eq. 11).
        pos_embeds: `M_s`, `(batch, n_words, pos_embedding_dim)`.
        position_embeds: `M_p`, `(batch, n_words, position_embedding_dim)`.
        semantic_loss: `L_semantic` (Eq. 6), `None` unless alignment was computed.
        modality_loss: `L_modality` (Eq. 7), `None` unless alignment was computed.
        text_embeds, context_embeds, image_embeds: projected pooled features `x_t`, `x_c`, `x_v`
            (`image_embeds` is `None` without pixel values).
        shapley_games: the batch's Shapley games (Shapley alignment only; `alignment.ShapleyGames`,
            detached, nothing computed until asked): `.values()` gives
            `"shapley/<loss>/<players>/matching"`, the mean Shapley value of the matching player
            in the anchors' games (e.g. `semantic/text`: texts as players of the contexts' games),
            and `.../others`, the mean value of a non-matching player.
        fusion_inputs: with `fuse=False`, the fusion's inputs `(H_t, states, context_mask, H_v,
            region_mask)` in place of `word_features` (the captured head fuses them itself).
    """

    word_features: torch.FloatTensor | None = None
    pos_embeds: torch.FloatTensor | None = None
    position_embeds: torch.FloatTensor | None = None
    semantic_loss: torch.FloatTensor | None = None
    modality_loss: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    context_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    shapley_games: ShapleyGames | None = None
    fusion_inputs: tuple | None = None


@dataclass
class ShapCATokenClassifierOutput(ModelOutput):
    """Output of `ShapCAForTokenClassification`.

    Args:
        loss: `alpha * semantic_loss + beta * modality_loss + main_loss` (Eq. 19).
        logits: CRF emission scores, `(batch, n_words, num_labels)`.
        predictions: Viterbi tags, `(batch, n_words)`, `-100` on padding (eval mode only).
        main_loss: CRF negative log-likelihood (Eq. 13), mean over sentences.
        semantic_loss, modality_loss: the alignment losses (Eqs. 6-7).
        shapley_games: the alignment games (see `ShapCAModelOutput`), summarised in the Trainer's logs.
        text_embeds, context_embeds, image_embeds: the projected pooled features the alignment
            losses see (`ShapCAModelOutput`), when they were computed; training's evaluation
            measures how well each retrieves its partner.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    predictions: torch.LongTensor | None = None
    main_loss: torch.FloatTensor | None = None
    semantic_loss: torch.FloatTensor | None = None
    modality_loss: torch.FloatTensor | None = None
    shapley_games: ShapleyGames | None = None
    text_embeds: torch.FloatTensor | None = None
    context_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


def drop_contexts(attention_mask: torch.Tensor, text_mask: torch.Tensor, context_mask: torch.Tensor,
                  share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Context dropout (`ShapCAConfig.context_dropout`, training only; not in the paper): exactly
    `round(share * n)` of the `n` examples that have a context, drawn from torch's RNG, lose it.
    Their context segment (the context's subwords and the separator after them) leaves the
    attention mask, so the encoder reads `[CLS] text [SEP]` at the same positions, as for an
    input without a context, and the alignment leaves them out of its games. Vectorised, with no
    host sync: the rows are ranked by random keys on the device."""
    has_context = context_mask.any(dim=1)
    keys = torch.rand(has_context.shape, device=has_context.device).masked_fill(~has_context, 2.0)
    rank = keys.argsort().argsort()  # 0 .. batch-1, the rows with a context first
    count = torch.round(has_context.sum() * share)
    drop = has_context & (rank < count)
    positions = torch.arange(text_mask.shape[1], device=text_mask.device)
    text_end = (text_mask * positions).amax(dim=1, keepdim=True) + 1  # the separator after the text
    segment = positions.unsqueeze(0) > text_end  # the context and its separator
    attention_mask = attention_mask * ~(drop.unsqueeze(1) & segment)
    return attention_mask, context_mask & ~drop.unsqueeze(1)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `states` `(batch, L, d)` over positions where `mask` `(batch, L)` is True
    (zero vector where no position is); `mask` may also be `(batch, S, L)` for `S` segments
    at once, giving `(batch, S, d)` (one batched matrix product)."""
    weights = mask.to(states.dtype)
    squeeze = weights.dim() == 2
    if squeeze:
        weights = weights.unsqueeze(1)
    means = torch.bmm(weights, states) / weights.sum(-1, keepdim=True).clamp(min=1)
    return means.squeeze(1) if squeeze else means


def vision_regions(outputs, grid: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`H_v` `(batch, regions, channels)` and pooled `x_v` `(batch, channels)` from any
    transformers vision backbone output. CNN feature maps are flattened to a region grid,
    after average pooling to at most `grid x grid` (see `ShapCAConfig.image_region_grid`)."""
    hidden = outputs.last_hidden_state
    if hidden.dim() == 4 and grid is not None and max(hidden.shape[-2:]) > grid:
        hidden = F.adaptive_avg_pool2d(hidden, (min(hidden.shape[-2], grid), min(hidden.shape[-1], grid)))
    regions = hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden
    pooled = getattr(outputs, "pooler_output", None)
    pooled = regions.mean(1) if pooled is None else pooled.flatten(1)
    return regions, pooled


def _all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over all ranks; the backward pass sums every rank's gradient
    for this rank's slice back to it (torch.distributed.nn), so the global loss that each
    rank computes gives, after DDP's gradient averaging, the gradient of one process
    holding the whole global batch."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def _all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor that needs no gradient (masks) over all ranks."""
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def _copy_pipeline_modules(save_directory) -> None:
    """The pipeline that `custom_pipelines` names travels with the model: `pipeline_shapca.py`
    and the modules it imports relatively, copied by path as transformers copies the modeling
    file's (the model does not import its pipeline)."""
    import os
    import shutil

    from transformers.dynamic_module_utils import get_relative_import_files

    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline_shapca.py")
    for path in [source, *get_relative_import_files(source)]:
        target = os.path.join(save_directory, os.path.basename(path))
        if not os.path.exists(target):
            shutil.copy(path, target)


class ShapCAPreTrainedModel(PreTrainedModel):
    config_class = ShapCAConfig
    base_model_prefix = "shapca"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # `save_pretrained` copies this folder's modules next to the weights and maps AutoModel to
    # the saved class, so `AutoModel.from_pretrained(dir, trust_remote_code=True)` returns it.
    _auto_class = "AutoModel"
    _extra_auto_map: dict[str, str] = {}
    # Losses are means over the micro-batch (sentences, or labelled grid cells): the Trainer
    # divides them by the accumulation steps itself instead of passing num_items_in_batch.
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        auto_map = {
            "AutoConfig": "configuration_shapca.ShapCAConfig",
            "AutoModel": f"modeling_shapca.{type(self).__name__}",
        }
        auto_map.update(self._extra_auto_map)
        self.config.auto_map = auto_map
        if not isinstance(self, ShapCAModel):
            # `pipeline(TASK, model=DIR, trust_remote_code=True)` finds the pipeline class here,
            # under the `multimodal-*` name and under the Hub tag the card declares
            # (`token-classification`, `text-classification`), so the card's tag runs too.
            spec = get_task(self.config.task)
            entry = {"impl": "pipeline_shapca.ShapCAPipeline", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
            self.config.custom_pipelines = {name: dict(entry) for name in (spec.pipeline_task, spec.hub_pipeline_tag)}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if not isinstance(self, ShapCAModel) and kwargs.get("is_main_process", True):
            _copy_pipeline_modules(save_directory)
        return result


    def predict(self, inputs, images=None, contexts=None, pairs=None, batch_size: int = 32, processor=None,
                is_split_into_words: bool | None = None, dtype: torch.dtype | None = None,
                trust_remote_code: bool | None = None, show_progress: bool | None = None,
                compile: bool | str = False, window: int | None = None, stride: int | None = None,
                ignore_labels=None):
        """Predictions for one input or a batch: the inference engine (`engine.py`) with this
        model as its runner, returning exactly the pipeline's records.

        Args:
            inputs: a string, a list of words, or a list of strings / word lists. A flat list
                of strings is one word list unless an item contains whitespace
                (`is_split_into_words` forces the reading).
            images, contexts, pairs: `None`, or one value per input (for a single input, the
                value itself): images as PIL images, paths or URLs; contexts as strings; MRE
                pairs as lists of `[head, tail]` word spans `[start, end)`.
            processor: defaults to the processor saved next to the weights, loaded with the
                consent the model was loaded with (`trust_remote_code` overrides it).
            dtype: e.g. `torch.bfloat16` to run under autocast on a GPU.
            show_progress: a progress bar (default: from 256 inputs on).
            compile: run a captured model (`torch.compile`, CUDA graphs on a GPU) on inputs padded
                to shape buckets: fewer kernel launches per call once compiled, at a one-time
                compile cost per shape (see docs/benchmarks.md); a string names another
                `torch.compile` backend (e.g. "aot_eager").
            window, stride: inputs longer than `window` words (default `config.max_words`, and
                what the processor's `max_length` holds) are read as windows sharing `stride`
                words (default `window // 4`); see `pipeline_shapca.py`.
            ignore_labels: labels left out of the results.

        Returns:
            NER: per input, `[{"entity_group", "score", "word", "start", "end"}]`; MRE: per input,
            `[{"head", "tail", "label", "score"}]`; MJERE: per input, `{"entities", "relations"}`.

        Example:
            >>> model = AutoModel.from_pretrained("path/or/hub-id", trust_remote_code=True)
            >>> model.predict("Kevin Durant enters Oracle Arena")
            [{'entity_group': 'PER', 'score': 0.97, 'word': 'Kevin Durant', 'start': 0, 'end': 12}, ...]
        """
        from .engine import InferenceEngine
        from .torch_runner import TorchRunner, load_processor

        if isinstance(self, ShapCAModel):
            raise TypeError("ShapCAModel has no task head: predict with ShapCAForTokenClassification or "
                            "ShapCAForWordPairExtraction")
        if getattr(self, "_cached_engine", None) is None or processor is not None:
            processor = processor or load_processor(self, trust_remote_code)
            self._cached_engine = InferenceEngine(TorchRunner(self, processor))  # checks the labels once
        return self._cached_engine.predict(
            inputs, images, contexts, pairs, batch_size=batch_size, is_split_into_words=is_split_into_words,
            autocast_dtype=dtype, compile=compile, show_progress=show_progress, window=window, stride=stride,
            ignore_labels=ignore_labels)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ShapCAModel):
            with torch.no_grad():
                module.no_image_region.normal_(mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, LinearChainCRF):
            module.reset_parameters()
        elif isinstance(module, ShapCAForTokenClassification):
            allowed_start, allowed_transitions = bio_constraints(module.config.id2label, module.crf.num_tags)
            init.copy_(module.allowed_start, allowed_start)
            init.copy_(module.allowed_transitions, allowed_transitions)

    @classmethod
    def from_text_vision_pretrained(
        cls, text_model_name_or_path: str, vision_model_name_or_path_or_config, **config_kwargs
    ):
        """A Shap-CA model with pretrained backbones (folders or Hub ids) and fresh heads.

        `vision_model_name_or_path_or_config` may be a config (or dict with `model_type`) to
        build the vision backbone with random weights, e.g. where no image weights are reachable.
        """
        config = ShapCAConfig.from_text_vision_pretrained(
            text_model_name_or_path, vision_model_name_or_path_or_config, **config_kwargs
        )
        model = cls(config)
        base = model if isinstance(model, ShapCAModel) else getattr(model, cls.base_model_prefix)
        text_model = AutoModel.from_pretrained(text_model_name_or_path)
        base.text_model.load_state_dict(text_model.state_dict(), strict=False)
        if isinstance(vision_model_name_or_path_or_config, str):
            vision_model = AutoModel.from_pretrained(vision_model_name_or_path_or_config)
            vision_model = getattr(vision_model, "vision_model", vision_model)
            base.vision_model.load_state_dict(vision_model.state_dict())
        return model


class ShapCAModel(ShapCAPreTrainedModel):
    """Encoders, alignment, fusion and the POS / position embeddings shared by both heads."""

    def __init__(self, config: ShapCAConfig):
        super().__init__(config)
        try:  # BERT-like encoders: the pooler is unused (and would idle under DDP).
            self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        except TypeError:
            self.text_model = AutoModel.from_config(config.text_config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        text_dim, vision_dim = config.text_hidden_size, config.vision_hidden_size
        self.text_projection = nn.Linear(text_dim, config.projection_dim, bias=False)
        self.vision_projection = nn.Linear(vision_dim, config.projection_dim, bias=False)
        # Region used in place of H_v when an example has no image.
        self.no_image_region = nn.Parameter(torch.zeros(1, 1, vision_dim))
        self.fusion = AdaptiveFusion(
            text_dim,
            vision_dim,
            config.fusion_dim,
            config.fusion_heads,
            dropout=config.dropout,
            adaptive=config.fusion == "adaptive",
        )
        self.pos_embeddings = nn.Embedding(config.num_pos_tags, config.pos_embedding_dim, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_words, config.position_embedding_dim)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    def encode_image(self, pixel_values: torch.FloatTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`H_v` `(batch, regions, vision_dim)` and pooled `x_v` `(batch, vision_dim)` of the
        vision encoder (before the learned no-image region is put in for missing images)."""
        return vision_regions(self.vision_model(pixel_values=pixel_values), self.config.image_region_grid)

    def _encode_image(self, pixel_values, has_image, batch_size, device, image_regions=None):
        """`H_v`, region mask and pooled `x_v`; the learned no-image region stands in for
        missing images (and for the whole batch when neither `pixel_values` nor
        `image_regions` is given)."""
        if pixel_values is None and image_regions is None:
            regions = self.no_image_region.expand(batch_size, 1, -1)
            return regions, torch.ones(batch_size, 1, dtype=torch.bool, device=device), None
        if image_regions is None:
            regions, pooled = self.encode_image(pixel_values)
        else:
            regions, pooled = image_regions, None
        if has_image is None:
            has_image = torch.ones(batch_size, dtype=torch.bool, device=device)
        first = torch.arange(regions.shape[1], device=device) == 0
        region_mask = has_image[:, None] | first[None, :]
        placeholder = self.no_image_region.to(regions.dtype).expand(batch_size, regions.shape[1], -1)
        regions = torch.where(has_image[:, None, None], regions, placeholder)
        return regions, region_mask, pooled

    def _alignment_losses(self, x_t, x_c, x_v, has_context, has_image):
        """`(L_semantic, L_modality, shapley_games)`; see `ShapCAModelOutput.shapley_games`."""
        cfg = self.config
        zero = x_t.sum() * 0.0
        if cfg.alignment == "none":
            return zero, zero, None
        if has_image is None:
            has_image = torch.zeros_like(has_context) if x_v is None else torch.ones_like(has_context)
        if x_v is None:  # no image in the batch: keep the loss in the graph at 0
            x_v = torch.zeros(x_t.shape[0], cfg.projection_dim, device=x_t.device, dtype=x_t.dtype)
        if cfg.gather_alignment_features and torch.distributed.is_available() and torch.distributed.is_initialized():
            x_t, x_c, x_v = (_all_gather_with_grad(x) for x in (x_t, x_c, x_v))
            has_context, has_image = (_all_gather(m.to(torch.uint8)).bool() for m in (has_context, has_image))
        method, generator = cfg.alignment, self.shapley_generator(x_t.device)
        if cfg.context_in_alignment:
            # Both losses (all four directions) as one batch of games: a fixed, small number
            # of kernels per step whatever the batch size.
            first = torch.stack([x_t.float(), x_v.float()])
            second = x_c.float().expand(2, -1, -1)
            masks = torch.stack([has_context, has_context & has_image])
            losses, games = self._alignment(first, second, masks, generator)
            semantic, modality = losses.unbind(0)
            # each direction's players (rows: text / image anchors with context players, then the reverse)
            players = [["semantic/context", "semantic/text"], ["modality/context", "modality/image"]]
        else:  # ablation: align text and image directly
            semantic = zero
            modality, games = self._alignment(x_v, x_t, has_image, generator)
            players = [["modality/text", "modality/image"]]
            if games is not None:
                games = (games[0].unsqueeze(0), None if games[1] is None else games[1].unsqueeze(0))
        return semantic, modality, None if games is None else ShapleyGames(*games, players)

    def _alignment(self, first, second, masks, generator):
        """`(losses, games)` of `alignment_loss(..., values=True)`, captured when switched on."""
        captured = getattr(self, "_captured_alignment", None)
        cfg = self.config
        settings = (cfg.tau, cfg.alignment, cfg.alignment_objective, cfg.alignment_margin)
        if captured is not None and (captured.tau, captured.method, captured.objective, captured.margin) == settings:
            return captured(first, second, masks, generator)
        return alignment_loss(first, second, masks, cfg.tau, cfg.alignment, generator, values=True,
                              objective=cfg.alignment_objective, margin=cfg.alignment_margin)

    def capture_alignment(self, enabled: bool = True, backend: str = "inductor", mode: str | None = None) -> None:
        """Compute the alignment losses (Alg. 1, all four directions, forward and backward) as
        one compiled region (`alignment.CapturedAlignment`): few kernels instead of ~160 per
        step on a GPU (`mode="reduce-overhead"` adds CUDA graphs). The losses equal the eager
        ones for the same random orderings (tested). Runtime only: not saved with the model.
        `train.py --capture_alignment` switches it on."""
        cfg = self.config
        self._captured_alignment = CapturedAlignment(cfg.tau, cfg.alignment, backend, mode, cfg.alignment_objective,
                                                     cfg.alignment_margin) \
            if enabled and self.config.alignment != "none" else None

    @torch.compiler.disable
    def shapley_generator(self, device: torch.device | None = None) -> torch.Generator:
        """Generator of Alg. 1's permutations on the device of the features, seeded from
        `torch.initial_seed()`: the permutations are drawn where they are used, with no host
        round trip per step.

        It is separate from the global RNG so that every rank of a distributed run draws the
        same permutations (dropout consumes the global RNG differently on each rank), which
        keeps the gathered global game identical everywhere.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        generator = getattr(self, "_shapley_generator", None)
        if generator is None or generator.device != device:
            generator = torch.Generator(device=device).manual_seed(torch.initial_seed() % 2**63)
            self._shapley_generator = generator
        return generator

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        word_index: torch.LongTensor,
        word_mask: torch.Tensor,
        text_mask: torch.Tensor,
        context_mask: torch.Tensor,
        pos_ids: torch.LongTensor,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        has_image: torch.Tensor | None = None,
        compute_alignment: bool = True,
        image_regions: torch.FloatTensor | None = None,
        fuse: bool = True,
    ) -> ShapCAModelOutput:
        """
        Args:
            input_ids, attention_mask, token_type_ids: `(batch, L)` `[CLS] text [SEP] context [SEP]`.
            word_index: `(batch, n_words)` position of each word's first subword.
            word_mask: `(batch, n_words)` bool, real words.
            text_mask / context_mask: `(batch, L)` bool, subwords of the text / the context.
            pos_ids: `(batch, n_words)` universal POS ids (0 = padding).
            pixel_values: `(batch, 3, H, W)` or None (no image in the batch).
            has_image: `(batch,)` bool, which examples have a real image.
            compute_alignment: compute the alignment losses (training); skipped at inference.
            image_regions: `H_v` from `encode_image`, in place of `pixel_values` (inference only:
                the alignment needs the pooled image; the ONNX export runs the vision encoder as
                its own graph and feeds its regions here).
            fuse: run the fusion (`False`: return its inputs as `fusion_inputs`, for the captured head).
        """
        if image_regions is not None and (pixel_values is not None or compute_alignment):
            raise ValueError("image_regions replaces pixel_values at inference: give one of them, with "
                             "compute_alignment=False")
        text_mask, context_mask, word_mask = text_mask.bool(), context_mask.bool(), word_mask.bool()
        if self.training and self.config.context_dropout > 0:
            attention_mask, context_mask = drop_contexts(attention_mask, text_mask, context_mask,
                                                         self.config.context_dropout)
        text_kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            text_kwargs["token_type_ids"] = token_type_ids
        states = self.text_model(**text_kwargs).last_hidden_state
        word_states = states.gather(1, word_index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))  # H_t
        batch = input_ids.shape[0]
        if has_image is not None:
            has_image = has_image.bool()
        regions, region_mask, pooled_image = self._encode_image(pixel_values, has_image, batch, input_ids.device,
                                                                 image_regions)

        semantic = modality = x_t = x_c = x_v = shapley_games = None
        if compute_alignment:  # the pooled features serve the alignment only (not computed at inference)
            # x_t and x_c: one batched masked mean and one projection for both segments
            x_t, x_c = self.text_projection(masked_mean(states, torch.stack([text_mask, context_mask], 1))).unbind(1)
            x_v = None if pooled_image is None else self.vision_projection(pooled_image)
            has_context = context_mask.any(dim=1)
            semantic, modality, shapley_games = self._alignment_losses(x_t, x_c, x_v, has_context, has_image)

        if not fuse:
            return ShapCAModelOutput(semantic_loss=semantic, modality_loss=modality, text_embeds=x_t,
                                     context_embeds=x_c, image_embeds=x_v, shapley_games=shapley_games,
                                     fusion_inputs=(word_states, states, context_mask, regions, region_mask))
        fused = self.fusion(word_states, states, context_mask, regions, region_mask)
        # M_p: word j's position embedding is row j of the table (a view: no lookup kernel)
        position_embeds = self.position_embeddings.weight[: word_index.shape[1]].unsqueeze(0).expand(batch, -1, -1)
        return ShapCAModelOutput(
            word_features=fused,
            pos_embeds=self.pos_embeddings(pos_ids),
            position_embeds=position_embeds,
            semantic_loss=semantic,
            modality_loss=modality,
            text_embeds=x_t,
            context_embeds=x_c,
            image_embeds=x_v,
            shapley_games=shapley_games,
        )


@dataclass
class ShapCAWordPairOutput(ShapCATokenClassifierOutput):
    """Output of `ShapCAForWordPairExtraction` (same fields as the token-classification output).

    Args:
        loss: `alpha * semantic_loss + beta * modality_loss + main_loss` (Eq. 19).
        logits: `log P_final`, `(batch, n, n, sum(group sizes))`, normalised within each group.
        predictions: `(batch, groups, n, n)` argmax label per group and cell, -100 outside words
            (eval mode only).
        main_loss: the word-pair cross-entropy (Eq. 18).
        semantic_loss, modality_loss: the alignment losses (Eqs. 6-7).
    """


def combine_losses(config: ShapCAConfig, main_loss, semantic_loss, modality_loss):
    """Eq. 19: `L = alpha * L_semantic + beta * L_modality + L_main`."""
    loss = main_loss
    if semantic_loss is not None:
        loss = loss + config.alpha * semantic_loss
    if modality_loss is not None:
        loss = loss + config.beta * modality_loss
    return loss


class ShapCAForTokenClassification(ShapCAPreTrainedModel):
    """Shap-CA for multimodal NER: MLP1 over `[M_t; M_s; M_p]` (Eq. 12) and a CRF (Eq. 13).

    Labels are word-level BIO tags (`-100` on padding). In eval mode the output carries the
    Viterbi decode, constrained to valid IOB2 sequences when the labels are BIO.
    """

    _extra_auto_map = {"AutoModelForTokenClassification": "modeling_shapca.ShapCAForTokenClassification"}

    def __init__(self, config: ShapCAConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.shapca = ShapCAModel(config)
        in_dim = config.fusion_dim + config.pos_embedding_dim + config.position_embedding_dim
        self.classifier = nn.Sequential(  # MLP1
            nn.Linear(in_dim, config.hidden_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.num_labels),
        )
        self.crf = LinearChainCRF(config.num_labels)
        # IOB2 constraints, derived from the labels: non-persistent buffers (they move with the
        # model and trace as tensors under torch.compile), refilled by `_init_weights` after
        # `from_pretrained`, which builds the model on the meta device and loads saved tensors only.
        allowed_start, allowed_transitions = bio_constraints(config.id2label, config.num_labels)
        self.register_buffer("allowed_start", allowed_start, persistent=False)
        self.register_buffer("allowed_transitions", allowed_transitions, persistent=False)
        self.post_init()

    def head_logits(self, outputs: ShapCAModelOutput) -> torch.Tensor:
        """CRF emissions `(batch, n_words, num_labels)`: MLP1 over `[M_t; M_s; M_p]` (Eq. 12)."""
        return self.classifier(torch.cat([outputs.word_features, outputs.pos_embeds, outputs.position_embeds], dim=-1))

    def decode(self, emissions: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Constrained Viterbi decode of emissions `(batch, n, T)` -> tags `(batch, n)`."""
        return self.crf.decode(emissions, word_mask, self.allowed_start, self.allowed_transitions)

    def capture_head(self, enabled: bool = True, backend: str = "inductor", mode: str | None = None) -> None:
        """Run the fusion, the classifier and the CRF (loss, and Viterbi outside training) as one
        compiled region over shape buckets (`captured.CapturedTokenHead`): equal losses,
        emissions and tags (tested), fewer kernels. Runtime only: not saved with the model."""
        self._captured_head = CapturedTokenHead(self, backend, mode) if enabled else None

    def _check_labels(self):
        missing = [i for i in range(self.crf.num_tags) if i not in self.config.id2label]
        if missing:
            raise ValueError(f"config.id2label has no label for tag ids {missing} of the CRF ({self.crf.num_tags} tags)")

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        word_index: torch.LongTensor,
        word_mask: torch.Tensor,
        text_mask: torch.Tensor,
        context_mask: torch.Tensor,
        pos_ids: torch.LongTensor,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        has_image: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        compute_alignment: bool | None = None,
        return_dict: bool | None = None,
        image_regions: torch.FloatTensor | None = None,
    ) -> ShapCATokenClassifierOutput | tuple:
        """
        Args:
            labels: `(batch, n_words)` tag ids, `-100` on padding. The loss is the mean over the
                batch's sentences (Eq. 19), so the Trainer averages it over accumulation steps.
            compute_alignment: compute the alignment losses (default: when `labels` are given).
            return_dict: `False` returns the output's non-`None` fields as a tuple.
            image_regions: precomputed `H_v` in place of `pixel_values` (see `ShapCAModel.forward`).
            Other inputs: see `ShapCAModel.forward`.
        """
        captured = getattr(self, "_captured_head", None)
        outputs = self.shapca(
            input_ids, attention_mask, word_index, word_mask, text_mask, context_mask, pos_ids,
            token_type_ids=token_type_ids, pixel_values=pixel_values, has_image=has_image,
            compute_alignment=labels is not None if compute_alignment is None else compute_alignment,
            image_regions=image_regions, fuse=captured is None,
        )
        word_mask = word_mask.bool()
        tags = None if labels is None else labels.masked_fill(labels == IGNORE_INDEX, 0)
        if captured is not None:  # fusion, classifier, CRF loss and decode as one compiled region
            main_loss, emissions, predictions = captured(outputs.fusion_inputs, pos_ids, word_mask, tags,
                                                         decode=not self.training)
        else:
            emissions = self.head_logits(outputs)
            main_loss = None if tags is None else self.crf(emissions, tags, word_mask, reduction="mean")
            predictions = None if self.training else self.decode(emissions, word_mask)
        loss = None if main_loss is None else combine_losses(self.config, main_loss, outputs.semantic_loss,
                                                             outputs.modality_loss)
        output = ShapCATokenClassifierOutput(
            loss=loss,
            logits=emissions,
            predictions=predictions,
            main_loss=main_loss,
            semantic_loss=outputs.semantic_loss,
            modality_loss=outputs.modality_loss,
            shapley_games=outputs.shapley_games,
            **alignment_features(outputs),
        )
        return output if _return_dict(self.config, return_dict) else output.to_tuple()


class ShapCAForWordPairExtraction(ShapCAPreTrainedModel):
    """Shap-CA for MRE and MJERE: the word-pair contrastive layer (Eqs. 14-18) over the grid of
    all word pairs, with the three channels `M_t` (fused text), `M_s` (POS) and `M_p` (positions).
    The grid layout follows `config.task` (`mre` or `mjere`); its codecs live in `word_pair.py`.
    """

    def __init__(self, config: ShapCAConfig):
        super().__init__(config)
        if not config.is_word_pair:
            raise ValueError(f"ShapCAForWordPairExtraction solves the word-pair tasks (mre, mjere); config.task is {config.task!r}")
        self.shapca = ShapCAModel(config)
        self.pair_layer = WordPairContrastiveLayer(
            {"text": config.fusion_dim, "pos": config.pos_embedding_dim, "position": config.position_embedding_dim},
            config.hidden_dim,
            config.group_sizes,
            refinement_scale=config.refinement_scale,
            dropout=config.dropout,
        )
        self.post_init()

    def head_logits(self, outputs: ShapCAModelOutput) -> torch.Tensor:
        """`log P_final` `(batch, n, n, sum(group sizes))` of the word-pair layer (Eqs. 14-17)."""
        return self.pair_layer({"text": outputs.word_features, "pos": outputs.pos_embeds,
                                "position": outputs.position_embeds})

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        word_index: torch.LongTensor,
        word_mask: torch.Tensor,
        text_mask: torch.Tensor,
        context_mask: torch.Tensor,
        pos_ids: torch.LongTensor,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        has_image: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        compute_alignment: bool | None = None,
        return_dict: bool | None = None,
        image_regions: torch.FloatTensor | None = None,
    ) -> ShapCAWordPairOutput | tuple:
        """
        Args:
            labels: `(batch, groups, n, n)` grid label ids, -100 on unlabelled cells (the
                processor's `pair_labels=` builds them from the task's codec).
            compute_alignment, return_dict: as in `ShapCAForTokenClassification.forward`.
        """
        outputs = self.shapca(
            input_ids, attention_mask, word_index, word_mask, text_mask, context_mask, pos_ids,
            token_type_ids=token_type_ids, pixel_values=pixel_values, has_image=has_image,
            compute_alignment=labels is not None if compute_alignment is None else compute_alignment,
            image_regions=image_regions,
        )
        log_probs = self.head_logits(outputs)
        loss = main_loss = None
        if labels is not None:
            main_loss = word_pair_loss(log_probs, labels, self.config.group_sizes)
            loss = combine_losses(self.config, main_loss, outputs.semantic_loss, outputs.modality_loss)
        predictions = None if self.training else grid_predictions(log_probs, self.config.group_sizes, word_mask)
        output = ShapCAWordPairOutput(
            loss=loss,
            logits=log_probs,
            predictions=predictions,
            main_loss=main_loss,
            semantic_loss=outputs.semantic_loss,
            modality_loss=outputs.modality_loss,
            shapley_games=outputs.shapley_games,
            **alignment_features(outputs),
        )
        return output if _return_dict(self.config, return_dict) else output.to_tuple()


def alignment_features(outputs: ShapCAModelOutput) -> dict:
    """The projected features a head's output passes on (computed with the alignment, else None)."""
    return {"text_embeds": outputs.text_embeds, "context_embeds": outputs.context_embeds,
            "image_embeds": outputs.image_embeds}


def _return_dict(config, return_dict: bool | None) -> bool:
    return getattr(config, "return_dict", True) if return_dict is None else return_dict


__all__ = [
    "ShapCAForWordPairExtraction",
    "ShapCAWordPairOutput",
    "ShapCAForTokenClassification",
    "ShapCAModel",
    "ShapCAModelOutput",
    "ShapCAPreTrainedModel",
    "ShapCATokenClassifierOutput",
    "combine_losses",
    "drop_contexts",
    "masked_mean",
]
