"""Hardware access: SPI NOR driver, sampling backends (RP2040 DMA, ESP32 timer), ATM90E32 metering IC."""
