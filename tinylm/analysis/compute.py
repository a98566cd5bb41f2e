"""What training a model costs: floating-point operations, accelerator-hours, energy and carbon.

The arithmetic behind "training GPT-3 took 1,287 MWh", one step per function, each step a
multiplication whose units are written down:

    training_flops      C = 6 N D                                   FLOPs
    inference_flops     2 N per token generated or scored           FLOPs
    accelerator_hours   C / (peak FLOP/s x utilisation) / 3600      device-hours
    energy_kwh          device-hours x watts x PUE / 1000           kWh
    co2e_kg             kWh x grid carbon intensity                 kg CO2e

Why 6?  For every weight of a matrix product, a token costs one multiply and one add in the
forward pass (2 FLOPs).  The backward pass needs two products of the same size: the gradient
with respect to the layer's input (to pass further back) and with respect to its weights (to
update them): 4 FLOPs.  So a token costs 2N forward and 6N in training, and D training
tokens about 6ND (Kaplan et al., 2020).  Attention adds a term that grows with the context
length; at the widths of large models it is small, and the rule leaves it out.  Embedding
lookups are not products and cost nothing here.

**FLOPs** (浮点运算) here means a *count* of floating-point operations; **FLOP/s** a rate.  A
device's *peak* rate is what its datasheet promises; the fraction of it a training run
achieves is its *utilisation*.  **PUE** (power usage effectiveness, 电能使用效率) is a
datacentre's total electricity divided by what its computers draw: 1.10 means 10% more for
cooling and power conversion.  The **carbon intensity** of a grid, in kg CO2e per kWh, turns
electricity into emissions (CO2e: carbon dioxide equivalent, 二氧化碳当量).

:data:`GPT3_PATTERSON` holds the published inputs and results for GPT-3 from Table 4 of
Patterson et al. (2021), "Carbon Emissions and Large Neural Network Training", so that the
functions can be checked against a published figure (the tests do).
"""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0
HOURS_PER_DAY = 24.0

FORWARD_FLOPS_PER_PARAMETER = 2
"""One multiply and one add per weight per token."""
BACKWARD_FLOPS_PER_PARAMETER = 4
"""Two products per weight per token: the gradient for the layer's input and for its weights."""
TRAINING_FLOPS_PER_PARAMETER = FORWARD_FLOPS_PER_PARAMETER + BACKWARD_FLOPS_PER_PARAMETER  # = 6


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ValueError naming the argument."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")
    return value


def training_flops(n_parameters: float, n_tokens: float) -> float:
    """Floating-point operations to train a dense model: ``6 * N * D``.

    ``n_parameters`` (N) is the number of weights used in matrix products, ``n_tokens`` (D) the
    number of tokens the training reads (counting repeats: two passes over a corpus are twice
    its size).  For a mixture-of-experts model, N is the parameters *activated* per token, not
    the total.  Returns FLOPs (a count).
    """
    n = _positive("n_parameters", n_parameters)
    d = _positive("n_tokens", n_tokens, allow_zero=True)
    return TRAINING_FLOPS_PER_PARAMETER * n * d


def inference_flops(n_parameters: float, n_tokens: float = 1) -> float:
    """Floating-point operations of a forward pass over ``n_tokens`` tokens: ``2 * N`` each.

    Generating or scoring one token with a model of N parameters costs about 2N FLOPs (the
    forward pass only; attention over a long context adds to it).  Returns FLOPs.
    """
    n = _positive("n_parameters", n_parameters)
    t = _positive("n_tokens", n_tokens, allow_zero=True)
    return FORWARD_FLOPS_PER_PARAMETER * n * t


def accelerator_hours(flops: float, peak_flops_per_second: float, utilisation: float) -> float:
    """Device-hours to do ``flops`` operations on devices of a given peak rate.

    ``peak_flops_per_second``: the datasheet's peak rate of one device, in FLOP/s (an NVIDIA
    V100 does 125e12 in half precision with its tensor cores).  ``utilisation``: the fraction
    of that peak the run achieves, in (0, 1]; large training runs reach roughly 0.2 to 0.6.
    Returns device-hours (GPU-hours for GPUs): divide by the number of devices for the
    wall-clock hours of a run that uses them all at once.
    """
    c = _positive("flops", flops, allow_zero=True)
    peak = _positive("peak_flops_per_second", peak_flops_per_second)
    u = _positive("utilisation", utilisation)
    if u > 1:
        raise ValueError(f"utilisation is a fraction of the peak rate, in (0, 1]; got {u} "
                         f"(for a percentage, divide by 100)")
    return c / (peak * u) / SECONDS_PER_HOUR


def implied_utilisation(flops: float, device_hours: float, peak_flops_per_second: float) -> float:
    """The fraction of peak a run achieved: ``flops / (device_hours * 3600 * peak)``.

    The inverse of :func:`accelerator_hours`, for runs whose size and duration are published.
    """
    c = _positive("flops", flops)
    h = _positive("device_hours", device_hours)
    peak = _positive("peak_flops_per_second", peak_flops_per_second)
    return c / (h * SECONDS_PER_HOUR * peak)


def energy_kwh(device_hours: float, watts_per_device: float, pue: float = 1.0) -> float:
    """Electricity, in kWh, drawn by devices running for ``device_hours`` in all.

    ``watts_per_device``: the average power of one device, in watts.  Use a *measured* average
    of the whole system per device (accelerator, its share of host CPU, memory, network, fans)
    when you have one; a datasheet's TDP (thermal design power) is only an approximation.
    ``pue``: the datacentre's power usage effectiveness, at least 1 (1.0: count the computers
    alone).  Returns kWh.
    """
    h = _positive("device_hours", device_hours, allow_zero=True)
    w = _positive("watts_per_device", watts_per_device)
    p = _positive("pue", pue)
    if p < 1:
        raise ValueError(f"pue is total facility power over IT power, so at least 1; got {p}")
    return h * w * p / 1000.0


def co2e_kg(kwh: float, kg_co2e_per_kwh: float) -> float:
    """Emissions, in kg of CO2 equivalent, of ``kwh`` of electricity from a grid of the given
    carbon intensity (kg CO2e per kWh; the US average that Patterson et al. used for GPT-3 is
    0.429).  Returns kg CO2e (divide by 1000 for tonnes)."""
    e = _positive("kwh", kwh, allow_zero=True)
    k = _positive("kg_co2e_per_kwh", kg_co2e_per_kwh, allow_zero=True)
    return e * k


def watts_per_core(tdp_watts: float, cores: int) -> float:
    """A processor's thermal design power shared equally among its cores, in watts per core.

    A rough figure for the power one busy core of a server processor draws; it leaves out the
    core's share of memory, disks, fans and the power supply's losses.
    """
    w = _positive("tdp_watts", tdp_watts)
    if int(cores) != cores or cores < 1:
        raise ValueError(f"cores must be a positive whole number, got {cores!r}")
    return w / int(cores)


def cpu_energy_kwh(cpu_seconds: float, watts_per_core: float, pue: float = 1.0) -> float:
    """Electricity, in kWh, of ``cpu_seconds`` of work on CPU cores drawing ``watts_per_core``.

    A CPU-second is one core busy for one second (what ``time.process_time()`` measures on one
    thread), so CPU-seconds / 3600 are core-hours: :func:`energy_kwh` with cores as devices.
    """
    s = _positive("cpu_seconds", cpu_seconds, allow_zero=True)
    return energy_kwh(s / SECONDS_PER_HOUR, watts_per_core, pue)


@dataclass(frozen=True)
class TrainingRun:
    """A training run as an energy account: devices, days, power, datacentre and grid.

    The fields are inputs; the properties chain this module's functions.  ``published_*``
    fields, when given, are the results the source states, to compare with.
    """

    name: str
    flops: float                     # total training FLOPs
    devices: int                     # accelerators used at once
    days: float                      # wall-clock training time
    watts_per_device: float          # measured average system power per accelerator, W
    pue: float                       # datacentre power usage effectiveness
    kg_co2e_per_kwh: float           # grid carbon intensity
    peak_flops_per_second: float     # one device's peak rate, FLOP/s
    source: str = ""                 # BibTeX key
    published_mwh: float | None = None
    published_tco2e: float | None = None
    published_flops_per_second: float | None = None   # measured rate per device, FLOP/s

    @property
    def device_hours(self) -> float:
        """devices x days x 24, in device-hours."""
        return self.devices * self.days * HOURS_PER_DAY

    @property
    def energy_kwh(self) -> float:
        """device-hours x watts x PUE, in kWh."""
        return energy_kwh(self.device_hours, self.watts_per_device, self.pue)

    @property
    def co2e_tonnes(self) -> float:
        """The energy at the grid's carbon intensity, in tonnes CO2e."""
        return co2e_kg(self.energy_kwh, self.kg_co2e_per_kwh) / 1000.0

    @property
    def utilisation(self) -> float:
        """The fraction of the devices' peak rate the run achieved, from its FLOPs and duration."""
        return implied_utilisation(self.flops, self.device_hours, self.peak_flops_per_second)


GPT3_PATTERSON = TrainingRun(
    name="GPT-3 175B",
    flops=3.14e23,                   # Table 4, "Total Computation"
    devices=10_000,                  # "Number of Chips": NVIDIA V100 GPUs
    days=14.8,                       # "Training time (days)"
    watts_per_device=330.0,          # measured system average power per accelerator, incl. host
    pue=1.10,                        # "Datacenter PUE"
    kg_co2e_per_kwh=0.429,           # US average, used for Microsoft's datacentre
    peak_flops_per_second=125e12,    # V100 peak (footnote 12 of the table)
    source="patterson2021",
    published_mwh=1287.0,            # "Energy Consumption (MWh)"
    published_tco2e=552.1,           # "Net tCO2e for Model Training" (the text rounds it to 552)
    published_flops_per_second=24.6e12,   # "Measured Performance (TFLOPS/s)", per V100
)
"""GPT-3's training as Patterson et al. (2021, Table 4) report it: OpenAI measured the V100s'
performance and power, the total FLOPs and the PUE; the grid intensity is the US average."""
