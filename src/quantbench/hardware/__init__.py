"""What the hardware can do: measured once per device (copy bandwidth, matmul rate) and cached,
beside datasheet figures; the roofline of each cell is drawn against the measured numbers."""
