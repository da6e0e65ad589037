"""OBIS codes (IEC 62056-61 value groups C.D.E) of the quantities the metering engine reports."""

# Energy registers, in the order the engine keeps them.
A_IMPORT = "1.8.0"  # active energy import (+A), Wh
A_EXPORT = "2.8.0"  # active energy export (-A), Wh
R_IMPORT = "3.8.0"  # reactive energy import (+R), varh
R_EXPORT = "4.8.0"  # reactive energy export (-R), varh
REGISTERS = (A_IMPORT, A_EXPORT, R_IMPORT, R_EXPORT)

# Instantaneous values (per window).
P_IMPORT = "1.7.0"  # active power import (+P), W
P_EXPORT = "2.7.0"  # active power export (-P), W
Q_IMPORT = "3.7.0"  # reactive power import (+Q), var
Q_EXPORT = "4.7.0"  # reactive power export (-Q), var
S_APPARENT = "9.7.0"  # apparent power, VA
VOLTAGE = "32.7.0"  # voltage L1, V
CURRENT = "31.7.0"  # current L1, A
POWER_FACTOR = "13.7.0"  # power factor (signed: negative when exporting)
FREQUENCY = "14.7.0"  # supply frequency, Hz

# Load profile values.
DEMAND_MAX = "1.6.0"  # maximum demand, active import, W
VOLTAGE_MIN = "32.3.0"
VOLTAGE_AVG = "32.5.0"
VOLTAGE_MAX = "32.6.0"

UNITS = {
    A_IMPORT: "Wh", A_EXPORT: "Wh", R_IMPORT: "varh", R_EXPORT: "varh",
    P_IMPORT: "W", P_EXPORT: "W", Q_IMPORT: "var", Q_EXPORT: "var", S_APPARENT: "VA",
    VOLTAGE: "V", CURRENT: "A", POWER_FACTOR: "", FREQUENCY: "Hz", DEMAND_MAX: "W",
    VOLTAGE_MIN: "V", VOLTAGE_AVG: "V", VOLTAGE_MAX: "V",
}
