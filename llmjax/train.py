"""The training loop: `train_and_evaluate(config, workdir)` runs one experiment from its config.

The state is created already sharded (eval_shape -> logical specs -> mesh shardings -> jit(init)),
the step is one `jax.jit` with named shardings and a donated state, and the dropout key is folded with
the step inside it, so a resumed run continues exactly where a checkpoint left it. Evaluation runs
every `eval.every_steps` and at each epoch end; the best checkpoint by the validation metric is
finally scored on the test split.

Faults lose nothing. SIGTERM (how TPU and cluster schedulers preempt) saves a checkpoint at the
current step and returns a result marked `preempted` (the command exits 0, and starting it again
resumes there). A step whose loss or gradients are not finite stops the run with its step named,
before anything non-finite is saved (`on_nonfinite='stop'`), or leaves the parameters and optimizer
state as they were and is counted (`'skip'`). A checkpoint that does not restore is set aside for
the one before it (`checkpoint.Checkpointer.restore_latest`).
"""

import copy
import functools
import json
import pathlib
import platform
import signal
import threading
import time
import warnings
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from llmjax import checkpoint as checkpoint_lib
from llmjax import config_lib, lora, model_info, models, optim, sharding, tasks
from llmjax import summary as summary_lib
from llmjax.errors import UserError
from llmjax.models import layers


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _state_fns(task, tx, config):
  def init_params(rng):
    return task.init(rng, config.data.buckets[0])

  def init_state(rng):
    params = nn.unbox(init_params(rng))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return init_params, init_state


def abstract_train_state(task, tx, mesh, config, rng):
  """The train state as ShapeDtypeStructs whose shardings follow the parameters' logical axes."""
  init_params, init_state = _state_fns(task, tx, config)
  # Traced for the mesh's devices, which `llmjax.plan`'s are and JAX's default ones are not: the
  # model's init runs its attention, whose kernel is checked against them (`layers.traced_platform`).
  with jax.set_mesh(mesh):
    boxed = jax.eval_shape(init_params, rng)
    abstract = jax.eval_shape(init_state, rng)
  param_specs = nn.get_partition_spec(boxed)
  sharding.check_divisible(nn.unbox(boxed), param_specs, mesh, config)
  def state_spec(x, spec, param):
    # Frozen parameters are MaskedNodes (no state) in the trainable part of the optimizer's state.
    # State shaped otherwise than its parameter (Adafactor's factored row and column moments, and
    # its (1,) placeholders) is small: replicated.
    if isinstance(x, optax.MaskedNode):
      return x
    return spec if x.shape == param.shape else PartitionSpec()

  opt_specs = optax.tree_map_params(
      tx, state_spec, abstract.opt_state, param_specs, abstract.params,
      transform_non_params=lambda _: PartitionSpec(),
      is_leaf=lambda x: isinstance(x, (PartitionSpec, optax.MaskedNode)))
  specs = TrainState(step=PartitionSpec(), params=param_specs, opt_state=opt_specs)
  return _abstract(abstract, sharding.logical_to_sharding(specs, mesh, config))


def create_train_state(task, tx, mesh, config, rng):
  """Returns (state, state_shardings); every array is born on its shards (no full copy anywhere)."""
  abstract = abstract_train_state(task, tx, mesh, config, rng)
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  # No logical-rules context here: out_shardings place the state, and Flax would constrain
  # DenseGeneral kernels while they are still flat.
  state = jax.jit(_state_fns(task, tx, config)[1], out_shardings=shardings)(rng)
  return state, shardings


def load_pretrained(params, pretrained: dict) -> Any:
  """Replaces the leaves of `params` found in `pretrained` (numpy, same layout), keeping shardings."""
  flat = flax.traverse_util.flatten_dict(pretrained, sep='/')
  used = set()

  def replace(path, leaf):
    key = optim.path_str(path)
    if key not in flat:
      logging.info('Not in the pretrained weights, initialised from scratch: %s', key)
      return leaf
    value = flat[key]
    if value.shape != leaf.shape:
      raise UserError(f'pretrained tensor {key} has shape {value.shape}, the model wants '
                      f'{leaf.shape}: the config does not match the checkpoint')
    used.add(key)
    value = np.asarray(value, dtype=leaf.dtype)
    return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

  params = jax.tree_util.tree_map_with_path(replace, params)
  unused = sorted(set(flat) - used)
  if unused:
    raise UserError(f'pretrained weights hold tensors the model lacks ({", ".join(unused[:3])}...): '
                    f'the checkpoint does not match config.model.name')
  return params


# XLA's library rewriter with this fusion type makes every matrix product one oneDNN call and fuses
# nothing into it. Its `dot` type also fuses neighbouring elementwise operations and the products
# they join, and in jaxlib 0.10.2 that gave a wrong (x^T y) * scalar and failed to compile the sum
# of three products (tests/test_train.py checks the step against XLA's own products).
ONEDNN_DOTS = {'xla_cpu_use_onednn': True,
               'xla_cpu_experimental_onednn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}


def compiler_options(config, devices) -> dict | None:
  """XLA options of the train and eval steps: oneDNN's products on an x86 CPU where
  `config.cpu_dot_library` is 'onednn', else XLA's defaults (None).

  XLA:CPU's default library, YNNPACK, splits a product over its rows only, so attention's products
  (one per batch row and head, a row per query) ran on one of two cores at 111 GFLOP/s; oneDNN ran
  them at 290-320, a 4096 x 384 by 384 x 1536 product at 340 instead of 300, and GPT-2's output
  layer (4096 x 384 by 384 x 50257) at 336 instead of 291 (2026-12-05, 2 cores).
  """
  if (config.cpu_dot_library != 'onednn' or devices[0].platform != 'cpu'
      or platform.machine().lower() not in ('x86_64', 'amd64')):
    return None
  return dict(ONEDNN_DOTS)


def make_train_step(task, tx, config, mesh, state_shardings):
  accum = config.optim.grad_accum_steps
  skip_nonfinite = config.on_nonfinite == 'skip'
  batch_sharding = sharding.batch_sharding(mesh, config)
  dropout_key = jax.random.fold_in(jax.random.key(config.seed, impl=config.rng_impl), 1)

  def grads_and_sums(params, batch, rng, mean=False):
    """Gradients of the batch's summed loss, or with `mean` of its mean over the batch's weight."""
    # Frozen parameters get exact zero gradients, and XLA skips computing their weight gradients.
    params = optim.stop_frozen_gradients(params, config.optim.freeze, lora.trainable(config))

    def objective(params):
      loss, sums = task.loss(params, batch, rng)
      if mean:
        # The weight does not depend on the parameters: dividing here scales the backward pass's
        # seed, where dividing the gradients after is one more pass over every one of them.
        loss = loss / jax.lax.stop_gradient(jnp.maximum(sums['weight'], 1.0))
      return loss, sums

    (_, sums), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return grads, sums

  def train_step(state, batch):
    rng = jax.random.fold_in(dropout_key, state.step)
    if accum == 1:
      grads, sums = grads_and_sums(state.params, batch, rng, mean=True)
    else:
      micro = jax.tree.map(lambda x: x.reshape((accum, -1) + x.shape[1:]), batch)

      def body(carry, i):
        # Each microbatch is re-constrained to the batch sharding, as in T5X.
        mb = jax.lax.with_sharding_constraint(jax.tree.map(lambda x: x[i], micro), batch_sharding)
        out = grads_and_sums(state.params, mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, out), None

      zeros = jax.tree.map(jnp.zeros_like,
                           jax.eval_shape(grads_and_sums, state.params,
                                          jax.tree.map(lambda x: x[0], micro), rng))
      (grads, sums), _ = jax.lax.scan(body, zeros, jnp.arange(accum))
      # Mean over the real examples of the whole batch, however it was split.
      grads = jax.tree.map(lambda g: g / jnp.maximum(sums['weight'], 1.0), grads)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(sums['loss']) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if skip_nonfinite:
      # A bad step is a no-op: parameters and optimizer state (Adam's moments and count) stay as
      # they were, and its sums do not count. One select per element, fused into the update.
      keep = functools.partial(jnp.where, finite)
      params = jax.tree.map(keep, params, state.params)
      opt_state = jax.tree.map(keep, opt_state, state.opt_state)
      sums = jax.tree.map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), sums)
    metrics = {**sums, 'grad_norm': grad_norm, 'finite': finite}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jit_step(train_step, config, mesh, in_shardings=(state_shardings, batch_sharding),
                  out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0,))


def make_eval_step(task, mesh, config, params_shardings):
  return jit_step(task.eval_outputs, config, mesh,
                  in_shardings=(params_shardings, sharding.batch_sharding(mesh, config)),
                  out_shardings=sharding.replicated(mesh))


def jit_step(step, config, mesh, **jit_kwargs):
  """jax.jit of a train or eval step with its `compiler_options`; with oneDNN's products, the step
  is traced within `layers.pad_products`, which pads the products oneDNN runs slowly."""
  options = compiler_options(config, mesh.devices.flat)
  onednn = bool(options and options.get('xla_cpu_use_onednn'))
  if onednn:
    # JAX's persistent compilation cache cannot store a program that calls oneDNN ("ToProto is not
    # implemented for thunk kind: onednn-fusion"), so the step compiles on every run; the warning
    # JAX gives for each such step would only repeat that.
    warnings.filterwarnings(
        'ignore', message=r'Error writing persistent compilation cache entry .*onednn-fusion')

  @functools.wraps(step)
  def traced(*args):
    with layers.pad_products(onednn):
      return step(*args)

  return jax.jit(traced, compiler_options=options, **jit_kwargs)


def evaluate(eval_step, task, params, data, split, mesh, config) -> dict[str, float]:
  outputs = [jax.device_get(eval_step(params, sharding.global_batch(batch, mesh, config)))
             for batch in data.eval_iter(split)]
  return task.summarize(outputs)


def _abstract(state, shardings):
  """The shapes, dtypes and shardings of `state`: the target a checkpoint is restored onto."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def prepare(config: ml_collections.ConfigDict, num_devices: int):
  """(config, data): a private copy of `config` completed from its data and model, and the data.

  The classes the data names (discovered in a user's files, or a ClassLabel's) are written into the
  config, so config.json, the checkpoints and the exported model all carry them; a pretrained
  model's architecture comes from its own config.json."""
  config = ml_collections.ConfigDict(config.to_dict())  # A private, unlocked copy.
  config_lib.validate(config, num_devices)
  data = tasks.build_data(config, process_index=jax.process_index(),
                          process_count=jax.process_count())
  names = getattr(data, 'label_names', None)
  if names:
    config.data.label_names = tuple(names)
  models.resolve(config)
  config_lib.validate(config, num_devices)
  return config, data


def total_steps(config: ml_collections.ConfigDict, data) -> int:
  """The run's length: `num_train_steps`, else epochs of the data (packed text is sized in steps)."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * data.steps_per_epoch


def _check_labels(meta: dict, config, directory) -> None:
  """A checkpoint's classes must be the data's: the same count in another order would silently
  swap labels."""
  saved = meta.get('label_names', [])
  if list(saved) != list(config.data.label_names):
    raise UserError(f'the checkpoints in {directory} were trained with labels {saved}, the data now '
                    f'gives {list(config.data.label_names)}: use a new --workdir, or the old data')


def _data_position(config, data, step: int) -> dict:
  """What fixes the train batches from global step `step` on: a checkpoint's `meta['data']`.

  Every pipeline's `train_iter(step)` is a pure function of these (and of the dataset), so they are
  the data iterator's whole state. `order` says whether the global batches depend on the process
  count: 'global' (classification, regression, token classification: every process cuts its rows
  from the same global batch) or 'per_process' (packed text, the pipelines without epochs: causal
  and masked LM, span corruption, translation, summarization, SFT; each process packs its own shard
  of the documents, every process_count-th)."""
  return {'step': step, 'seed': config.seed, 'batch_size': config.batch_size,
          'process_count': jax.process_count(),
          'order': 'per_process' if data.steps_per_epoch is None else 'global'}


def _check_data_position(meta: dict, config, data) -> None:
  """Logs what a resumed run's batches are, when they are not the interrupted run's exactly."""
  step, saved = meta['step'], meta.get('data')
  if saved is None:
    logging.info('The checkpoint of step %d has no data position (written before llmjax saved '
                 'one); the batches resume at step %d of the current config.', step, step)
    return
  now = _data_position(config, data, step)
  changed = [f'{k}={now[k]} (was {saved[k]})' for k in ('seed', 'batch_size') if now[k] != saved[k]]
  if changed:
    logging.warning('Resuming step %d with config %s: the batches from here on are not the ones '
                    'the interrupted run would have read.', step, ', '.join(changed))
  if now['process_count'] == saved['process_count']:
    return
  counts = f'written by {saved["process_count"]} processes, resumed by {now["process_count"]}'
  if now['order'] == 'global':
    logging.info('The checkpoint of step %d was %s: the global batches are the same (their order '
                 'depends on the seed and the step only); each process reads other rows of them.',
                 step, counts)
  else:
    logging.info('The checkpoint of step %d was %s: each process packs its own shard of the '
                 'documents, so the batches from here on are those of a %d-process run at step %d, '
                 'not the continuation of the saved run (documents may repeat or be skipped this '
                 'epoch).', step, counts, now['process_count'], step)


def _improved(value, best, mode):
  return best is None or (value > best if mode == 'max' else value < best)


class _Preemption:
  """Within `with`: SIGTERM sets a flag (a handler that does no work), which the loop polls.

  With several processes, `requested` combines the flags of all processes (an all-gather of one
  integer between hosts) every `sync_steps` steps, so all of them save the same step. The cost is
  that collective, and the host waiting there for the step in flight, once every `sync_steps`."""

  def __init__(self, sync_steps: int):
    self.sync_steps = sync_steps
    self.signalled = False
    self._previous = None

  def __enter__(self):
    # Python lets only the main thread install handlers; elsewhere (a notebook's worker thread)
    # SIGTERM keeps its old meaning.
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.signalled = True

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def requested(self, step: int) -> bool:
    """Whether to save and stop after `step` (0-based); the same answer in every process."""
    if jax.process_count() == 1:
      return self.signalled
    if (step + 1) % self.sync_steps:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.int32(self.signalled))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       devices=None) -> dict[str, Any]:
  """Runs (or resumes) the experiment `config` in `workdir`; returns the final summary."""
  start_time = time.time()
  workdir = pathlib.Path(workdir)
  devices = list(jax.devices() if devices is None else devices)
  config, data = prepare(config, len(devices))
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(config_lib.to_json(config))

  mesh = sharding.make_mesh(config, devices)
  steps_per_epoch = data.steps_per_epoch  # None for packed text: the run is sized in steps.
  num_steps = total_steps(config, data)
  task = tasks.task_for(config, data)
  tx = optim.make(config.optim, num_steps, lora.trainable(config))
  state, state_shardings = create_train_state(task, tx, mesh, config, jax.random.key(config.seed))
  trained, total = lora.parameter_counts(state.params, config)
  logging.info('Training %s of %s parameters (%.2f%%).', f'{trained:,}', f'{total:,}',
               100 * trained / total)
  checkpoints = checkpoint_lib.Checkpointer(workdir / 'checkpoints', keep=config.checkpoint.keep)
  meta = {'step': 0, 'best': None, 'best_step': None, 'bad_evals': 0, 'stopped_early': False,
          'epoch_loss': {}, 'evals': [], 'label_names': list(config.data.label_names),
          'skipped_steps': 0}
  restored = checkpoints.restore_latest(_abstract(state, state_shardings))
  if restored is not None:
    latest, state, meta = restored
    meta.setdefault('skipped_steps', 0)  # Checkpoints from before `on_nonfinite` lack it.
    _check_labels(meta, config, checkpoints.directory)
    _check_data_position(meta, config, data)
    logging.info('Resumed from the checkpoint of step %d in %s.', latest, checkpoints.directory)
  elif config.model.init_from:
    state = state.replace(params=load_pretrained(state.params, models.pretrained(config.model)))
    logging.info('Initialised from %s.', config.model.init_from)

  writer = summary_lib.MetricWriter(workdir, enabled=is_main)
  rules = sharding.rules(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    train_step = make_train_step(task, tx, config, mesh, state_shardings)
    eval_step = make_eval_step(task, mesh, config, state_shardings.params)
    schedule = optim.learning_rate(config.optim, num_steps)
    progress = summary_lib.Progress(num_steps, start_step=meta['step'])

    def nonfinite(step, sums):
      """Step `step` (1-based) had a non-finite loss or gradient norm: count it, or stop."""
      if config.on_nonfinite == 'skip':
        meta['skipped_steps'] += 1
        logging.warning('step %d: non-finite loss or gradients (gradient norm %s); skipped it, '
                        'parameters unchanged (%d skipped so far).', step, sums['grad_norm'],
                        meta['skipped_steps'])
        return
      checkpoints.wait()  # The last good checkpoint, started before this step, lands whole.
      latest = checkpoints.latest_step()
      kept = (f'the latest checkpoint, of step {latest}, precedes it' if latest is not None
              else 'no checkpoint saved yet')
      raise UserError(
          f'step {step}: the loss ({sums["loss"]}) or gradient norm ({sums["grad_norm"]}) is not '
          f'finite; stopped ({kept}): lower optim.lr, check the data, or pass '
          f'--config.on_nonfinite=skip')

    def flush(window):
      """Fetches the sums of finished steps and writes them (called one step late)."""
      if not window:
        return
      sums = jax.device_get([m for _, m, _ in window])
      last = window[-1][0]
      for (step, _, _), s in zip(window, sums):
        if not s['finite']:
          nonfinite(step + 1, s)
        epoch = str(step // steps_per_epoch if steps_per_epoch else 0)
        loss, w = meta['epoch_loss'].get(epoch, (0.0, 0.0))
        meta['epoch_loss'][epoch] = (loss + float(s['loss']), w + float(s['weight']))
      total = {k: sum(float(s[k]) for s in sums) for k in sums[0]
               if k not in ('grad_norm', 'finite')}
      scalars = task.train_metrics(total)
      scalars.update(grad_norm=float(sums[-1]['grad_norm']), learning_rate=float(schedule(last)))
      if config.on_nonfinite == 'skip':
        scalars['skipped_steps'] = meta['skipped_steps']
      if steps_per_epoch:
        scalars['epoch'] = (last + 1) / steps_per_epoch
      tokens = sum(t for _, _, (t, _) in window)
      flops = sum(f for _, _, (_, f) in window)
      scalars.update(progress.update(last + 1, tokens, flops))
      writer.write(last + 1, 'train', scalars)
      logging.info('%s', progress.line(last + 1, scalars))

    def run_eval(step):
      metrics = evaluate(eval_step, task, state.params, data, 'validation', mesh, config)
      writer.write(step, 'validation', metrics)
      logging.info('step %d validation: %s', step, summary_lib.format_metrics(metrics))
      value = metrics[config.eval.metric]
      if _improved(value, meta['best'], config.eval.mode):
        meta.update(best=value, best_step=step, bad_evals=0)
      else:
        meta['bad_evals'] += 1
      meta['evals'].append({'step': step, **metrics})

    # Model FLOPs of a row of each shape (bucketed data has several), as llmjax.bench counts them.
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)
    row_flops = functools.cache(
        lambda inputs, targets: model_info.train_flops(config, shapes, inputs, targets))
    window, pending, preempted = [], None, False
    train_iter = data.train_iter(meta['step'])
    # A run that stopped early and is started again goes straight to the test evaluation.
    with _Preemption(config.checkpoint.preemption_sync_steps) as preemption:
      for step in range(meta['step'], meta['step'] if meta['stopped_early'] else num_steps):
        batch = next(train_iter)
        rows, inputs, targets = model_info.batch_shape(batch)
        work = (task.tokens(batch) * jax.process_count(),
                rows * jax.process_count() * row_flops(inputs, targets))
        state, metrics = train_step(state, sharding.global_batch(batch, mesh, config))
        flush(pending)  # The previous window: its steps are done, so this fetch does not stall.
        pending = None
        window.append((step, metrics, work))
        done = step + 1
        end_of_epoch = bool(steps_per_epoch) and done % steps_per_epoch == 0
        do_eval = end_of_epoch or done == num_steps or (
            config.eval.every_steps and done % config.eval.every_steps == 0)
        preempted = preemption.requested(step)
        do_save = do_eval or preempted or done % config.checkpoint.every_steps == 0
        if do_save or done % config.log_every_steps == 0:
          pending, window = window, []
        if not do_save:
          continue
        # A checkpoint's meta must account for every step before it: flush now, not one step late.
        flush(pending)
        pending = None
        if do_eval:
          run_eval(done)
        meta['step'] = done
        meta['data'] = _data_position(config, data, done)
        patience = config.eval.patience
        meta['stopped_early'] = bool(do_eval and patience and meta['bad_evals'] >= patience)
        checkpoints.save(done, state, copy.deepcopy(meta), pin=meta['best_step'])
        progress.restart_clock()  # Evaluation and saving are not training time.
        if preempted:
          checkpoints.wait()
          logging.info('Preempted (SIGTERM): saved the checkpoint of step %d; start the same '
                       'command again to resume.', done)
          break
        if meta['stopped_early']:
          logging.info('Early stopping: %d evaluations without a better validation %s.', patience,
                       config.eval.metric)
          break
    flush(pending)
    checkpoints.wait()
    if preempted:  # No test evaluation or export: the run is not finished.
      checkpoints.close()
      writer.close()
      return {'steps': meta['step'], 'preempted': True, 'skipped_steps': meta['skipped_steps'],
              'wall_time_s': time.time() - start_time}

    best_step = meta['best_step']
    if best_step != meta['step']:
      state, _ = checkpoints.restore(best_step, _abstract(state, state_shardings))
    test_metrics = evaluate(eval_step, task, state.params, data, 'test', mesh, config)
  writer.write(best_step, 'test', test_metrics)
  # The best model, in the Hugging Face format that `init_from` and transformers read.
  unsupported = models.export_unsupported(config.model)
  if unsupported:
    logging.warning('No Hugging Face export (the checkpoints hold the model): %s', unsupported)
  else:
    params = lora.merge(state.params, config)  # Plain weights: W + alpha/rank * A B.
    if jax.process_count() > 1:
      params = multihost_utils.process_allgather(params, tiled=True)
    if is_main:
      models.export(params, config.model, workdir / 'hf_export', getattr(data, 'label_names', None))
  checkpoints.close()

  result = {
      'steps': meta['step'],
      'best_step': best_step,
      'stopped_early': meta['stopped_early'],
      'preempted': False,
      'skipped_steps': meta['skipped_steps'],
      'epoch_loss': {int(e): l / max(w, 1) for e, (l, w) in meta['epoch_loss'].items()},
      'validation': meta['evals'],
      'test': test_metrics,
      'wall_time_s': time.time() - start_time,  # Of this start; a resumed run counts from it.
      'params': {'trainable': trained, 'total': total},
  }
  if is_main:
    (workdir / 'results.json').write_text(json.dumps(result, indent=2))
    print(summary_lib.final_summary(result, config), flush=True)
  writer.close()
  return result


def restore_params(task, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                   step: int | None = None, *, devices=None):
  """(params, meta, mesh): the parameters of the run in `workdir` at its best checkpoint (the
  latest when it has no best), or at `step`, sharded over a mesh of `devices` for evaluation."""
  devices = list(jax.devices() if devices is None else devices)
  # Whatever mesh and rules trained the run, evaluate on all devices in data parallel.
  config.mesh.update(data=-1, fsdp=1, tensor=1)
  config.parallelism, config.logical_rules = 'data', ()
  mesh = sharding.make_mesh(config, devices)
  # The optimizer only shapes the state to restore; its schedule does not matter here.
  target = abstract_train_state(task, optim.make(config.optim, 1, lora.trainable(config)), mesh,
                                config, jax.random.key(0))
  checkpoints = checkpoint_lib.Checkpointer(pathlib.Path(workdir) / 'checkpoints',
                                            keep=config.checkpoint.keep)
  try:
    steps = checkpoints.all_steps()
    if not steps:
      raise UserError(f'{workdir}/checkpoints holds no checkpoint: train first, or fix --workdir')
    if step is not None and step not in steps:
      raise UserError(f'{workdir} has no checkpoint of step {step}: choose one of {sorted(steps)}')
    latest = max(steps)
    state, meta = checkpoints.restore(latest, target)
    chosen = step if step is not None else meta.get('best_step') or latest
    if chosen != latest:
      state, meta = checkpoints.restore(chosen, target)
  finally:
    checkpoints.close()
  return state.params, {**meta, 'restored_step': chosen}, mesh


def run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The config a run in `workdir` trained with (its config.json: resolved architecture, labels)."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    raise UserError(f'{workdir} has no config.json: pass the --workdir of a training run')
  saved = json.loads(path.read_text())
  # Over today's defaults: keys llmjax gained since the run was trained keep their default values.
  config = config_lib.base_config()
  config.model = models.model_config(saved['model']['name'])
  config.update(saved)
  return config


def _restored(config, workdir, step):
  """(data, task, params, meta, mesh) of a trained run, for evaluation and prediction."""
  config, data = prepare(config, jax.device_count())
  task = tasks.task_for(config, data)
  params, meta, mesh = restore_params(task, config, workdir, step)
  _check_labels(meta, config, pathlib.Path(workdir) / 'checkpoints')
  return config, data, task, params, meta, mesh


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, split: str,
                        output: str | pathlib.Path | None = None, step: int | None = None) -> dict:
  """`--mode=eval`: scores the run's best checkpoint (or `step`) on `split`; writes metrics.json."""
  config, data, task, params, meta, mesh = _restored(config, workdir, step)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
    params_shardings = jax.tree.map(lambda x: x.sharding, params)
    eval_step = make_eval_step(task, mesh, config, params_shardings)
    metrics = evaluate(eval_step, task, params, data, split, mesh, config)
  result = {'split': split, 'step': meta['restored_step'], **metrics}
  if jax.process_index() == 0:
    path = pathlib.Path(output or pathlib.Path(workdir) / 'metrics.json')
    path.write_text(json.dumps(result, indent=2))
    print(f'step {result["step"]} {split}: {summary_lib.format_metrics(metrics)} -> {path}',
          flush=True)
  return result


def predict_file(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                 input_path: str | pathlib.Path, output: str | pathlib.Path,
                 step: int | None = None) -> int:
  """`--mode=predict`: one JSON line per input line (the input's fields and the prediction) from
  the run's best checkpoint (or `step`); returns the number of lines written."""
  config, data, task, params, meta, mesh = _restored(config, workdir, step)
  if not hasattr(task, 'predict'):
    raise UserError(f'task {config.task.name!r} has no predict mode: use llmjax.generate for text '
                    'continuations')
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
    params_shardings = jax.tree.map(lambda x: x.sharding, params)
    predict_step = jax.jit(task.predict,
                           in_shardings=(params_shardings, sharding.batch_sharding(mesh, config)),
                           out_shardings=sharding.replicated(mesh))
    lines = []
    for batch, inputs in data.predict_iter(input_path):
      outputs = jax.device_get(predict_step(params, sharding.global_batch(batch, mesh, config)))
      for given, predicted in zip(inputs, task.format_predictions(outputs, inputs)):
        lines.append(json.dumps({**given, **predicted}, ensure_ascii=False))
  if jax.process_index() == 0:
    pathlib.Path(output).write_text(''.join(line + '\n' for line in lines))
    print(f'{len(lines)} predictions of step {meta["restored_step"]} -> {output}', flush=True)
  return len(lines)
