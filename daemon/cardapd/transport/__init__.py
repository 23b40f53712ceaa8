"""Transport: PC/SC through pcscd (the pyscard adapter, the reader monitor) and USB reader
hotplug through udev."""
