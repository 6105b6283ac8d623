"""`make bench`: throughput, CPU, memory, writer and storage figures, measured side by side."""
