"""Reading a profiler trace back into time per operation (`llmjax.profiling`)."""

import gzip
import json

import jax
import jax.numpy as jnp
import pytest

from llmjax import profiling
from llmjax.errors import UserError


def _op(pid, tid, ts, dur, name, module='jit_step'):
  return {'ph': 'X', 'pid': pid, 'tid': tid, 'ts': ts, 'dur': dur, 'name': name,
          'args': {'hlo_module': module, 'hlo_op': name}}


def _process(pid, name):
  return {'ph': 'M', 'pid': pid, 'name': 'process_name', 'args': {'name': name}}


def test_operations_running_side_by_side_share_their_time():
  # CPU: the executor's spans on two of XLA's threads; another module's and Python's are left out.
  events = [_process(1, '/host:CPU'),
            _op(1, 10, 0, 10, 'dot.1'), _op(1, 11, 5, 10, 'fusion.2'), _op(1, 10, 20, 4, 'dot.1'),
            _op(1, 10, 30, 100, 'dot.9', module='jit_other'),
            {'ph': 'X', 'pid': 1, 'tid': 12, 'ts': 0, 'dur': 200, 'name': '$bench.py time_steps'}]
  times = profiling.operation_times(events, 'jit_step')
  # 0-5 dot alone, 5-10 both (2.5 each), 10-15 fusion alone; dot again for 4.
  assert times == {'dot.1': (5 + 2.5 + 4, 2), 'fusion.2': (2.5 + 5, 1)}


def test_a_gpu_trace_counts_its_kernels_not_their_launches():
  # GPU: the host's launch spans carry hlo_op too; the kernels on the device's streams are the time.
  events = [_process(1, '/host:CPU'), _process(2, '/device:GPU:0'),
            _op(1, 10, 0, 2, 'gemm.1'), _op(2, 7, 3, 40, 'gemm.1'), _op(2, 7, 43, 9, 'loop_fusion.4')]
  assert profiling.operation_times(events, 'jit_step') == {'gemm.1': (40, 1), 'loop_fusion.4': (9, 1)}


def test_instructions_give_types_sources_and_flops_of_a_compiled_module():
  f = jax.jit(lambda a, b: (jnp.tanh(a @ b), a.sum()))
  text = f.lower(jnp.ones((4, 2)), jnp.ones((2, 3))).compile().as_text()
  table = profiling.instructions(text)
  dots = [name for name in table if profiling.signature(name, table) == 'f32[4,3] <- f32[4,2], f32[2,3]']
  assert dots, text
  assert table[dots[0]]['op_name'].endswith('dot_general')
  assert table[dots[0]]['flops'] == 2 * 4 * 3 * 2
  assert profiling.module_name(text) == 'jit__lambda'
  # Tuples, with the /*index=N*/ comments XLA puts in long ones, are one type.
  text = 'HloModule m\n\nENTRY %e {\n  ROOT %tuple.8 = (s32[], f32[2]{0}, /*index=2*/f32[3,4]{1,0}) ' \
         'tuple(%a, %b, %c)\n}\n'
  assert profiling.instructions(text)['tuple.8']['type'] == '(s32[], f32[2], f32[3,4])'


def test_a_fusion_counts_the_flops_of_the_dots_it_computes():
  # As XLA:CPU prints a oneDNN product: the fused computation first, then the fusion calling it.
  text = '''HloModule m

%fused_computation.1 (param_0.1: f32[8,2,16], param_1.1: f32[16,5]) -> f32[16,5] {
  %param_0.1 = f32[8,2,16]{2,1,0} parameter(0)
  %param_1.1 = f32[16,5]{1,0} parameter(1)
  ROOT %dot.3 = f32[16,5]{1,0} dot(%param_0.1, %param_1.1), lhs_contracting_dims={0,1}, rhs_contracting_dims={0}
}

ENTRY %main.9 (p0: f32[8,2,16], p1: f32[16,5]) -> f32[16,5] {
  %p0 = f32[8,2,16]{2,1,0} parameter(0)
  %p1 = f32[16,5]{1,0} parameter(1)
  ROOT %onednn_fusion.2 = f32[16,5]{1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_computation.1
}
'''
  table = profiling.instructions(text)
  assert table['onednn_fusion.2']['flops'] == table['dot.3']['flops'] == 2 * 16 * 5 * (8 * 2)
  assert table['p0']['flops'] == 0
  assert profiling.signature('onednn_fusion.2', table) == 'f32[16,5] <- f32[8,2,16], f32[16,5]'


def test_summary_of_a_trace_file_by_kind_and_slowest(tmp_path):
  run = tmp_path / 'plugins' / 'profile' / '2026_12_06'
  run.mkdir(parents=True)
  events = [_process(1, '/host:CPU'), _op(1, 10, 0, 3000, 'onednn_fusion.3'),
            _op(1, 10, 3000, 1000, 'onednn_fusion'), _op(1, 10, 4000, 2000, 'copy_fusion.1')]
  with gzip.open(run / 'vm.trace.json.gz', 'wt') as f:
    json.dump({'traceEvents': events}, f)
  hlo = ('HloModule jit_step\n\nENTRY %e {\n  %p = f32[8,1000]{1,0} parameter(0)\n'
         '  %onednn_fusion.3 = f32[8,8]{1,0} dot(%p, %p), lhs_contracting_dims={1}, '
         'rhs_contracting_dims={1}, metadata={op_name="jit(step)/mlp/dot_general"}\n}\n')
  s = profiling.summarize(str(tmp_path), hlo, steps=2, step_s=0.004)
  assert s['busy_ms'] == pytest.approx(3.0)
  # 128,000 FLOPs in each of its 3 ms: 42.67 MFLOP/s.
  assert s['products'] == {'ms': 1.5, 'flops': 2 * 8 * 8 * 1000 / 2}
  assert s['top'][0]['flops_per_s'] == pytest.approx(2 * 8 * 8 * 1000 / 3e-3)
  assert s['kinds'] == {'onednn_fusion': {'ms': 2.0, 'runs': 1.0}, 'copy_fusion': {'ms': 1.0, 'runs': 0.5}}
  assert [t['name'] for t in s['top']] == ['onednn_fusion.3', 'copy_fusion.1', 'onednn_fusion']
  text = profiling.format_summary(s)
  assert 'onednn_fusion.3' in text and '(mlp/dot_general)' in text and '66.7%' in text
  assert '42.67 MFLOP/s' in text and 'matrix products (XLA dots) 1.5 ms per step (50.0%)' in text
  empty = profiling.summarize(str(tmp_path / 'none'), hlo, steps=2, step_s=0.004)
  assert 'no trace-viewer file was written' in profiling.format_summary(empty)
  other = profiling.summarize(str(tmp_path), hlo.replace('jit_step', 'jit_other'), 2, 0.004)
  assert "no operation of the module 'jit_other'" in profiling.format_summary(other)


def test_an_unwritable_trace_directory_is_one_line_before_anything_runs(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(UserError, match=r'--profile=.*file/trace: cannot write a trace there .*: give a'):
    profiling.prepare(str(blocker / 'trace'))
  profiling.prepare(str(tmp_path / 'new' / 'trace'))
  assert (tmp_path / 'new' / 'trace').is_dir()
