"""Measuring tools, not backends: ``calibrate`` (the machine profile ``archc calibrate`` writes, from
the shapes of ``grid`` checked against the bounds of ``peak``),
``profile`` (measured latency per row, ``archc profile``) and ``memory`` (peak memory as torch
allocates it, which the memory pass's predictions are tested against). Each imports torch; this
package's root imports nothing, so ``archc flops --latency`` never loads torch."""
