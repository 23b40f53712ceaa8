"""cardap_sim: simulators that let cardapd's tests run without hardware or J-LIS services."""
