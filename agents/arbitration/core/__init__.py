"""The arbitration's pure core: the reference processor and the algorithm it runs.

No I/O, no clock, no Kafka: raw records in, encoded derived records and checkpoints out. This
package is the readable reference of the algorithm (docs/ARBITRATION.md) and the oracle of the
compiled core (``native/arbcore``), which must give byte-identical outputs and checkpoints.
"""
