"""A Stommel two-box model of the overturning circulation, forced through its tipping point.

The model follows Stommel (1961), with a prescribed freshwater flux in place of
Stommel's salinity restoring so that the freshwater forcing can be ramped. It is
a conceptual model of the Atlantic meridional overturning circulation (AMOC). Box 1 is the warm, salty low-latitude box, box 2 the cold
high-latitude box where water sinks when the overturning is on. Both boxes have
volume ``V``; the overturning ``q`` is proportional to the density difference
of the two boxes under a linear equation of state::

    q        = k (alpha (T1 - T2) - beta (S1 - S2))                 [Sv]
    dT1/dt   = (T1* - T1) / tau_T - |q| / V (T1 - T2)               [K yr-1]
    dT2/dt   = (T2* - T2) / tau_T + |q| / V (T1 - T2)
    dS1/dt   =  S0 F / V - |q| / V (S1 - S2)                        [psu yr-1]
    dS2/dt   = -S0 F / V + |q| / V (S1 - S2)

``F`` [Sv] is the freshwater transport of the atmosphere from box 1 to box 2,
applied as a virtual salt flux, so ``S1 + S2`` is conserved. ``q > 0`` is the
thermally driven state (sinking in box 2, the AMOC "on"), ``q < 0`` the
salinity-driven reversed state.

Equilibria. With ``A = k alpha (T1* - T2*)``, ``B = k beta S0`` and
``r = V / tau_T``, a steady state has ``S1 - S2 = S0 F / |q|`` and
``T1 - T2 = r (T1* - T2*) / (r + 2 |q|)``; writing ``q = s u`` with ``u > 0``
and ``s = +-1`` gives the cubic::

    2 s u**3 + s r u**2 + (2 B F - A r) u + B F r = 0

which has two positive roots for ``s = +1`` (the stable thermally driven state
and an unstable one) while ``F`` is below the saddle-node forcing ``F_c``, none
above it, and one positive root for ``s = -1`` at every ``F > 0``. ``F_c`` is
the maximum over ``u`` of ``F(u) = u (A r / (r + 2 u) - u) / B``.

In the limit ``tau_T -> 0`` the temperatures equal their restoring values and
the model reduces to Stommel's one-variable form: with
``x = beta (S1 - S2) / (alpha (T1* - T2*))``, ``mu = B F / A**2`` and time in
units of ``V / (2 A)``::

    dx/dt = mu - x |1 - x|

whose equilibria are ``x = (1 -+ sqrt(1 - 4 mu)) / 2`` (stable and unstable,
for ``mu < 1/4``) and ``x = (1 + sqrt(1 + 4 mu)) / 2`` (reversed, stable). The
saddle-node lies at ``mu = 1/4``, that is ``F_c = A**2 / (4 B)``.

Reference: Stommel, H. (1961), Thermohaline convection with two stable regimes
of flow, Tellus 13(2), 224-230. The reduced form above is derived here from the
equations of this module.

:func:`load_amoc` ramps ``F`` slowly through ``F_c`` with red freshwater noise
and noise in the restoring temperatures, so the overturning weakens and then
collapses into the reversed state. It is the data of the ``amoc-tipping`` case
(``dataset:amoc-tipping`` in ``data.paths``).
"""

from __future__ import annotations

import bisect

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from scipy.integrate import solve_ivp

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "StommelParameters",
    "critical_forcing",
    "equilibrium_overturning",
    "integrate_box_model",
    "load_amoc",
    "plot_amoc",
]

# Seconds per Julian year, to express box volumes in Sv yr.
_SECONDS_PER_YEAR = 365.25 * 86400.0


@dataclass(frozen=True)
class StommelParameters:
    """Parameters of the two-box model; the defaults give an overturning of about 14 Sv at F = 0.1 Sv."""

    hydraulic_constant: float = 4500.0  # k [Sv], overturning per unit density contrast (delta rho / rho0)
    thermal_expansion: float = 2.0e-4  # alpha [K-1]
    haline_contraction: float = 8.0e-4  # beta [psu-1]
    reference_salinity: float = 35.0  # S0 [psu], converts the freshwater flux to a salt flux
    box_volume: float = 2.0e16  # V [m3] of each box; sets the salinity adjustment time V / q, about 45 yr at 14 Sv
    restoring_temperature_low: float = 22.0  # T1* [degC]
    restoring_temperature_high: float = 2.0  # T2* [degC]
    temperature_relaxation_time: float = 5.0  # tau_T [yr]; 0 keeps the temperatures at T1*, T2*

    def __post_init__(self) -> None:
        for name in ("hydraulic_constant", "thermal_expansion", "haline_contraction", "reference_salinity", "box_volume"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"StommelParameters.{name} must be a positive finite number, got {value!r}.")
        if not np.isfinite(self.temperature_relaxation_time) or self.temperature_relaxation_time < 0:
            raise ValueError(
                f"StommelParameters.temperature_relaxation_time must be >= 0 years, got {self.temperature_relaxation_time!r}."
            )
        if not self.restoring_temperature_low > self.restoring_temperature_high:
            raise ValueError(
                f"StommelParameters.restoring_temperature_low ({self.restoring_temperature_low!r} degC) must exceed "
                f"restoring_temperature_high ({self.restoring_temperature_high!r} degC): box 1 is the warm box."
            )

    @property
    def volume_sv_yr(self) -> float:
        """Box volume V [Sv yr]."""
        return self.box_volume / (1.0e6 * _SECONDS_PER_YEAR)

    @property
    def thermal_scale(self) -> float:
        """A = k alpha (T1* - T2*) [Sv], the overturning with no salinity contrast and fixed temperatures."""
        delta_t = self.restoring_temperature_low - self.restoring_temperature_high
        return self.hydraulic_constant * self.thermal_expansion * delta_t

    @property
    def haline_scale(self) -> float:
        """B = k beta S0 [Sv]; B F / |q| is the haline part of q at equilibrium."""
        return self.hydraulic_constant * self.haline_contraction * self.reference_salinity

    @property
    def relaxation_transport(self) -> float:
        """r = V / tau_T [Sv], infinite when the temperatures are held fixed."""
        if self.temperature_relaxation_time == 0:
            return np.inf
        return self.volume_sv_yr / self.temperature_relaxation_time


# ---------------------------------------------------------------- equilibria


def equilibrium_overturning(forcing: float, parameters: StommelParameters | None = None) -> np.ndarray:
    """Return every equilibrium overturning of the two-box model at a constant freshwater forcing.

    Parameters
    ----------
    forcing : float
        Freshwater transport ``F`` from box 1 to box 2 [Sv], positive.
    parameters : StommelParameters, optional
        Model parameters; the defaults when not given.

    Returns
    -------
    numpy.ndarray
        Equilibrium overturning ``q`` [Sv] in descending order: the stable and
        the unstable thermally driven states (``q > 0``) while ``forcing`` is
        below :func:`critical_forcing`, then the stable reversed state (``q < 0``).

    Examples
    --------
    >>> q = equilibrium_overturning(0.2)
    >>> q.size, bool(q[0] > 0 > q[-1])
    (3, True)
    """
    params = parameters or StommelParameters()
    forcing = float(forcing)
    if not np.isfinite(forcing) or forcing <= 0:
        raise ValueError(
            f"forcing must be a positive freshwater transport [Sv], got {forcing!r}; at F <= 0 the salinity "
            "contrast vanishes or reverses and the equilibria of this module do not apply."
        )
    a, b, r = params.thermal_scale, params.haline_scale, params.relaxation_transport

    if np.isinf(r):
        # Fixed temperatures: s u**2 = A u - B F, quadratic in u = |q|.
        on = np.roots([1.0, -a, b * forcing])
        off = np.roots([1.0, a, -b * forcing])
        on_speeds, off_speeds = on, off
    else:
        on_speeds = np.roots([2.0, r, 2 * b * forcing - a * r, b * forcing * r])
        off_speeds = np.roots([2.0, r, a * r - 2 * b * forcing, -b * forcing * r])
    on_speeds = _positive_real(on_speeds)
    off_speeds = _positive_real(off_speeds)
    return np.sort(np.concatenate([on_speeds, -off_speeds]))[::-1]


def _positive_real(roots: np.ndarray) -> np.ndarray:
    # A double root at the saddle-node comes back from np.roots with a tiny imaginary part.
    real = roots[np.abs(roots.imag) <= 1e-7 * np.maximum(1.0, np.abs(roots.real))].real
    return real[real > 0]


def critical_forcing(parameters: StommelParameters | None = None) -> float:
    """Return the freshwater forcing of the saddle-node where the thermally driven state ends [Sv].

    ``F_c`` is the maximum over ``u > 0`` of ``F(u) = u (A r / (r + 2 u) - u) / B``
    (see the module docstring). Its maximum lies where ``2 u (r + 2 u)**2 = A r**2``,
    a cubic with one positive root; for fixed temperatures ``F_c = A**2 / (4 B)``.

    Examples
    --------
    >>> round(critical_forcing(StommelParameters(temperature_relaxation_time=0.0)), 4)
    0.6429
    """
    params = parameters or StommelParameters()
    a, b, r = params.thermal_scale, params.haline_scale, params.relaxation_transport
    if np.isinf(r):
        return a**2 / (4 * b)
    speed = _positive_real(np.roots([8.0, 8.0 * r, 2.0 * r**2, -a * r**2]))[0]
    return float(speed * (a * r / (r + 2 * speed) - speed) / b)


def _equilibrium_state(forcing: float, params: StommelParameters) -> np.ndarray:
    # (T1, T2, S1, S2) of the stable thermally driven state; the box means stay at
    # the mean restoring temperature and at S0.
    q = equilibrium_overturning(forcing, params)[0]
    if q <= 0:
        raise ValueError(
            f"forcing_start={forcing!r} Sv is above the saddle-node forcing {critical_forcing(params):.4g} Sv, so the "
            "model has no thermally driven state to start from; lower forcing_start."
        )
    t_star = params.restoring_temperature_low - params.restoring_temperature_high
    t_mean = 0.5 * (params.restoring_temperature_low + params.restoring_temperature_high)
    r = params.relaxation_transport
    delta_t = t_star if np.isinf(r) else r * t_star / (r + 2 * q)
    delta_s = params.reference_salinity * forcing / q
    s0 = params.reference_salinity
    return np.array([t_mean + delta_t / 2, t_mean - delta_t / 2, s0 + delta_s / 2, s0 - delta_s / 2])


# ---------------------------------------------------------------- integration


def _overturning(state: np.ndarray, params: StommelParameters) -> np.ndarray:
    # state (4, ...) = T1, T2, S1, S2 -> q [Sv]
    t1, t2, s1, s2 = state
    return params.hydraulic_constant * (params.thermal_expansion * (t1 - t2) - params.haline_contraction * (s1 - s2))


def integrate_box_model(
    time: Sequence[float] | np.ndarray,
    freshwater_flux: Sequence[float] | np.ndarray,
    parameters: StommelParameters | None = None,
    initial_state: Sequence[float] | None = None,
    temperature_anomaly: np.ndarray | None = None,
    rtol: float = 1e-8,
) -> xr.Dataset:
    """Integrate the two-box model with :func:`scipy.integrate.solve_ivp` (RK45).

    Parameters
    ----------
    time : array of float, shape (n,)
        Increasing output times [yr]; the integration starts at ``time[0]``.
    freshwater_flux : array of float, shape (n,)
        Freshwater transport ``F`` from box 1 to box 2 at ``time`` [Sv], linearly
        interpolated in between.
    parameters : StommelParameters, optional
        Model parameters; the defaults when not given.
    initial_state : sequence of 4 float, optional
        ``T1, T2`` [degC] and ``S1, S2`` [psu] at ``time[0]``. By default the
        stable thermally driven equilibrium at ``freshwater_flux[0]``. With
        ``temperature_relaxation_time = 0`` the temperatures given are ignored.
    temperature_anomaly : array of float, shape (n, 2), optional
        Anomalies of the restoring temperatures ``T1*, T2*`` at ``time`` [K],
        linearly interpolated in between.
    rtol : float
        Relative tolerance of the solver; the absolute tolerance is ``rtol``
        times 1 K and 1 psu.

    Returns
    -------
    xarray.Dataset
        ``T1, T2`` [degC], ``S1, S2`` [psu] and ``q`` [Sv] on ``time``.
    """
    params = parameters or StommelParameters()
    time = np.asarray(time, dtype=float)
    flux = np.asarray(freshwater_flux, dtype=float)
    if time.ndim != 1 or time.size < 2 or not np.all(np.diff(time) > 0):
        raise ValueError(f"time must be a 1-D increasing array of at least 2 values [yr], got shape {time.shape}.")
    if flux.shape != time.shape or not np.isfinite(flux).all():
        raise ValueError(
            f"freshwater_flux must be finite with the shape of time {time.shape}, got shape {flux.shape}."
        )
    anomaly = np.zeros((time.size, 2)) if temperature_anomaly is None else np.asarray(temperature_anomaly, dtype=float)
    if anomaly.shape != (time.size, 2) or not np.isfinite(anomaly).all():
        raise ValueError(f"temperature_anomaly must be finite with shape {(time.size, 2)}, got {anomaly.shape}.")
    start = _equilibrium_state(flux[0], params) if initial_state is None else np.asarray(initial_state, dtype=float)
    if start.shape != (4,) or not np.isfinite(start).all():
        raise ValueError(f"initial_state must be 4 finite values (T1, T2, S1, S2), got {initial_state!r}.")

    fixed_temperature = params.temperature_relaxation_time == 0
    volume = params.volume_sv_yr
    k, alpha, beta = params.hydraulic_constant, params.thermal_expansion, params.haline_contraction
    restoring = np.array([params.restoring_temperature_low, params.restoring_temperature_high])

    # Freshwater flux and the two restoring temperatures, interpolated together.
    # Plain Python floats, because the solver calls the tendencies some 10**4
    # times and NumPy's per-call overhead on scalars would dominate.
    drivers = np.column_stack([flux, restoring + anomaly])
    slopes = (np.diff(drivers, axis=0) / np.diff(time)[:, None]).tolist()
    drivers, nodes = drivers.tolist(), time.tolist()

    def drivers_at(t: float) -> list[float]:
        i = min(max(bisect.bisect_right(nodes, t) - 1, 0), len(nodes) - 2)
        return [d + s * (t - nodes[i]) for d, s in zip(drivers[i], slopes[i])]

    def tendencies(t: float, state: np.ndarray) -> np.ndarray:
        f, t1_star, t2_star = drivers_at(t)
        if fixed_temperature:
            state = (t1_star, t2_star, state[2], state[3])
        t1, t2, s1, s2 = (float(v) for v in state)
        q = k * (alpha * (t1 - t2) - beta * (s1 - s2))
        exchange = abs(q) / volume  # [yr-1]
        salt_flux = params.reference_salinity * f / volume  # [psu yr-1]
        if fixed_temperature:
            dt1 = dt2 = 0.0
        else:
            dt1 = (t1_star - t1) / params.temperature_relaxation_time - exchange * (t1 - t2)
            dt2 = (t2_star - t2) / params.temperature_relaxation_time + exchange * (t1 - t2)
        ds1 = salt_flux - exchange * (s1 - s2)
        ds2 = -salt_flux + exchange * (s1 - s2)
        return np.array([dt1, dt2, ds1, ds2])

    # The forcing is piecewise linear between the output times, so steps no longer
    # than their spacing keep the solver from stepping over a kink.
    solution = solve_ivp(
        tendencies,
        (time[0], time[-1]),
        start,
        method="RK45",
        t_eval=time,
        rtol=rtol,
        atol=rtol,
        max_step=float(np.min(np.diff(time))),
    )
    if not solution.success:
        raise RuntimeError(f"The two-box model integration failed: {solution.message}")
    state = solution.y  # (4, time)
    if fixed_temperature:
        state[:2] = restoring[:, None] + anomaly.T
    return _box_dataset(time, state, params)


def _box_dataset(time: np.ndarray, state: np.ndarray, params: StommelParameters) -> xr.Dataset:
    coords = {"time": ("time", time, {"units": "year", "long_name": "model year", "axis": "T"})}
    variables = {
        "T1": (state[0], "degC", "temperature of the low-latitude box"),
        "T2": (state[1], "degC", "temperature of the high-latitude box"),
        "S1": (state[2], "psu", "salinity of the low-latitude box"),
        "S2": (state[3], "psu", "salinity of the high-latitude box"),
        "q": (_overturning(state, params), "Sv", "overturning transport"),
    }
    ds = xr.Dataset(
        {name: ("time", values, {"units": units, "long_name": long_name}) for name, (values, units, long_name) in variables.items()},
        coords=coords,
    )
    ds["q"].attrs["comment"] = "positive: thermally driven, sinking in the high-latitude box; negative: reversed"
    return ds


# ---------------------------------------------------------------- the case data


def _red_noise(rng: np.random.Generator, n: int, std: float, timescale: float, size: int = 1) -> np.ndarray:
    # AR(1) series with lag-1 correlation exp(-1 yr / timescale) and stationary std `std`.
    phi = np.exp(-1.0 / timescale) if timescale > 0 else 0.0
    shocks = rng.standard_normal((n, size)) * std * np.sqrt(1.0 - phi**2)
    out = np.empty((n, size))
    out[0] = rng.standard_normal(size) * std
    for i in range(1, n):
        out[i] = phi * out[i - 1] + shocks[i]
    return out


def load_amoc(
    n_years: int = 2500,
    forcing_start: float = 0.1,
    forcing_end: float = 0.8,
    freshwater_noise_std: float = 0.1,
    freshwater_noise_timescale: float = 5.0,
    temperature_noise_std: float = 0.5,
    seed: int = 0,
    parameters: StommelParameters | None = None,
) -> xr.Dataset:
    """Simulate the two-box model under a slow freshwater ramp through its tipping point.

    The prescribed forcing rises linearly from ``forcing_start`` to
    ``forcing_end``. Red noise (AR(1), one value per year, linearly
    interpolated) is added to the freshwater flux and to each restoring
    temperature. The run starts in the stable thermally driven equilibrium.
    With the defaults the forcing crosses the saddle-node (0.512 Sv) in year
    1472. The overturning reverses in year 1687 (seed 0; 1727, 1833 and 1694
    with seeds 1 to 3, and 1783 without noise), because the passage through a
    saddle-node under a slow ramp lags the crossing.

    Parameters
    ----------
    n_years : int
        Length of the run [yr], one value per year.
    forcing_start, forcing_end : float
        Prescribed freshwater transport from box 1 to box 2 in the first and last
        year [Sv]; ``forcing_start`` must lie below the saddle-node forcing.
    freshwater_noise_std : float
        Standard deviation of the freshwater noise [Sv].
    freshwater_noise_timescale : float
        e-folding time of the noise autocorrelation [yr], for the freshwater and
        temperature noise alike; 0 gives white noise.
    temperature_noise_std : float
        Standard deviation of the noise of each restoring temperature [K].
    seed : int
        Seeds the noise.
    parameters : StommelParameters, optional
        Model parameters; the defaults when not given.

    Returns
    -------
    xarray.Dataset
        On ``time`` (model year 0 .. n_years - 1, float, ``units="year"``):
        ``T1``, ``T2`` [degC], ``S1``, ``S2`` [psu], ``q`` [Sv], ``forcing`` (the
        prescribed freshwater transport, known in advance) and
        ``freshwater_flux`` (forcing plus noise) [Sv]. Attributes give the
        saddle-node forcing ``critical_forcing`` [Sv], the year the forcing
        crosses it, the seed and the parameters.

    Examples
    --------
    >>> ds = load_amoc(n_years=200, forcing_end=0.3)
    >>> sorted(ds.data_vars)
    ['S1', 'S2', 'T1', 'T2', 'forcing', 'freshwater_flux', 'q']
    """
    params = parameters or StommelParameters()
    if int(n_years) != n_years or n_years < 2:
        raise ValueError(f"n_years must be an integer of at least 2, got {n_years!r}.")
    for name, value in (
        ("freshwater_noise_std", freshwater_noise_std),
        ("freshwater_noise_timescale", freshwater_noise_timescale),
        ("temperature_noise_std", temperature_noise_std),
    ):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if not (np.isfinite(forcing_start) and np.isfinite(forcing_end)) or forcing_start <= 0:
        raise ValueError(
            f"forcing_start and forcing_end must be finite and forcing_start > 0 Sv, got {forcing_start!r} and {forcing_end!r}."
        )

    n = int(n_years)
    time = np.arange(n, dtype=float)
    forcing = np.linspace(forcing_start, forcing_end, n)
    rng = np.random.default_rng(seed)
    flux = forcing + _red_noise(rng, n, freshwater_noise_std, freshwater_noise_timescale)[:, 0]
    anomaly = _red_noise(rng, n, temperature_noise_std, freshwater_noise_timescale, size=2)
    start = _equilibrium_state(forcing_start, params)

    # Tolerance 1e-6 (K or psu): far below the noise, and the default run of 2500
    # years then takes about 1 s on one core.
    ds = integrate_box_model(time, flux, params, start, anomaly, rtol=1e-6)
    ds["forcing"] = ("time", forcing, {"units": "Sv", "long_name": "prescribed freshwater transport from box 1 to box 2"})
    ds["freshwater_flux"] = (
        "time",
        flux,
        {"units": "Sv", "long_name": "freshwater transport from box 1 to box 2 (prescribed forcing plus red noise)"},
    )

    f_c = critical_forcing(params)
    above = np.flatnonzero(forcing >= f_c)
    ds.attrs = {
        "title": "Stommel two-box model of the overturning circulation under a freshwater ramp",
        "source": "condupdate.datasets.amoc.load_amoc (generated, no observations)",
        "references": "Stommel, H. (1961), Thermohaline convection with two stable regimes of flow, Tellus 13(2), 224-230.",
        "critical_forcing": f_c,
        "critical_forcing_year": float(time[above[0]]) if above.size else np.nan,
        "seed": int(seed),
        **{f"parameter_{name}": value for name, value in zip(StommelParameters.__dataclass_fields__, astuple(params))},
    }
    return ds


# ---------------------------------------------------------------- figure


def plot_amoc(
    predictions: xr.Dataset,
    ax: Axes | None = None,
    methods: Sequence[str] = ("parent", "child", "pattern_scaling"),
    training: xr.DataArray | None = None,
    dim: str = "time",
) -> Figure:
    """Plot the true overturning and the predictions of each method over time.

    Parameters
    ----------
    predictions : xarray.Dataset
        ``truth`` and one variable per method on ``dim``, as in
        ``RunResult.predictions["q"]`` of :func:`condupdate.jobs.run.run`.
        Methods missing from it are left out.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; by default a new figure.
    methods : sequence of str
        Prediction variables to draw.
    training : xarray.DataArray, optional
        The truth over the training period, drawn in grey before the application period.
    dim : str
        The time dim.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if not isinstance(predictions, xr.Dataset) or "truth" not in predictions or dim not in predictions.dims:
        raise ValueError(
            f"predictions must be a Dataset with a 'truth' variable on dim {dim!r}, such as "
            "RunResult.predictions['q']; got "
            f"{type(predictions).__name__} with variables {sorted(map(str, getattr(predictions, 'data_vars', [])))}."
        )
    drawn = [m for m in methods if m in predictions]
    if not drawn:
        raise ValueError(f"None of methods={list(methods)} is in predictions, which has {sorted(map(str, predictions.data_vars))}.")

    if ax is None:
        fig = Figure(figsize=(9.0, 4.0), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    truth = predictions["truth"]
    units = truth.attrs.get("units", "")
    if training is not None:
        ax.plot(training[dim].values, training.values, color="0.6", linewidth=1.0, label="truth (training)")
        ax.axvline(float(truth[dim].values[0]), color="0.4", linestyle=":", linewidth=1.0)
    ax.plot(truth[dim].values, truth.values, color="black", linewidth=1.2, zorder=4, label="truth")
    colours = {"parent": "tab:blue", "child": "tab:red", "pattern_scaling": "tab:green"}
    for method in drawn:
        ax.plot(
            predictions[dim].values,
            predictions[method].values,
            color=colours.get(method),
            linewidth=1.6,
            label=method.replace("_", " "),
        )
    ax.axhline(0.0, color="0.8", linewidth=0.8, zorder=0)
    ax.set_xlabel(f"{dim} [{predictions[dim].attrs.get('units', '')}]".replace(" []", ""))
    ax.set_ylabel(f"{truth.attrs.get('long_name', truth.name or 'q')} [{units}]".replace(" []", ""))
    ax.set_title("Overturning through the tipping point: truth and emulators", loc="left")
    ax.legend(fontsize="small", ncols=2)
    return fig
