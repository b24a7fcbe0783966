//! `fiml_arbcore`: FIML Stream's compiled arbitration core.
//!
//! `Core` is `agents/arbitration/core/processor.py`'s `Processor` in Rust, with byte-identical
//! outputs and marks (tests/unit/arbitration/test_compiled_core.py checks it); engine.py wraps
//! it for the worker. The rare paths whose text only Python can write (pydantic's validation
//! errors, the time bounds' message) call back into the `fallback` object given to `Core`.

mod candles;
mod checkpoint;
mod consensus;
mod copies;
mod error;
mod json;
mod lags;
mod processor;
mod raw;
mod records;
mod reliability;
mod state;
mod times;
mod volatility;

use std::collections::HashMap;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyTuple};

use processor::{Oracle, Output, Outputs, Processor, Settings};

/// The Python side's callbacks: `fallback(value) -> (ok, bytes | reason)`, and its methods
/// `out_of_time(value)`, `trade_error(...)`, `health_error(...)`, each a dead-letter reason.
///
/// A callback answers the reference's own errors with a reason; anything else it raises
/// (MemoryError, a bug of the Python side) is kept in `raised` and re-raised to the caller
/// once the record is done, as the reference would raise it: the worker stops and the record
/// is applied again by the next owner, never dead-lettered and lost.
struct PyOracle<'a, 'py> {
    fallback: &'a Bound<'py, PyAny>,
    raised: std::cell::RefCell<Option<PyErr>>,
}

impl<'a, 'py> PyOracle<'a, 'py> {
    fn new(fallback: &'a Bound<'py, PyAny>) -> Self {
        PyOracle {
            fallback,
            raised: std::cell::RefCell::new(None),
        }
    }

    /// Keep the first exception a callback raised; the reason returned is never written (the
    /// caller raises instead).
    fn reason_of(&self, err: PyErr, py: Python<'_>) -> String {
        let name = err
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".into());
        let reason = format!("{name}: {}", err.value(py));
        self.raised.borrow_mut().get_or_insert(err);
        reason
    }

    /// The exception a callback raised while the last record was applied, if any.
    fn take_raised(&self) -> PyResult<()> {
        match self.raised.borrow_mut().take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

impl Oracle for PyOracle<'_, '_> {
    fn decode(&self, value: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let py = self.fallback.py();
        let answer = self
            .fallback
            .call1((value.map(|v| PyBytes::new(py, v)),))
            .and_then(|r| r.extract::<(bool, Bound<'_, PyAny>)>());
        match answer {
            Ok((true, canonical)) => canonical
                .extract::<Vec<u8>>()
                .map_err(|e| self.reason_of(e, py)),
            Ok((false, reason)) => Err(reason
                .extract::<String>()
                .map_err(|e| self.reason_of(e, py))?),
            Err(e) => Err(self.reason_of(e, py)),
        }
    }

    fn out_of_time(&self, value: &[u8]) -> String {
        let py = self.fallback.py();
        self.fallback
            .call_method1("out_of_time", (PyBytes::new(py, value),))
            .and_then(|r| r.extract::<String>())
            .unwrap_or_else(|e| self.reason_of(e, py))
    }

    fn trade_error(
        &self,
        symbol: &str,
        trade_id: &str,
        price: f64,
        amount: f64,
        side: Option<&str>,
        provider: &str,
        event_time_ms: i64,
    ) -> String {
        let py = self.fallback.py();
        self.fallback
            .call_method1(
                "trade_error",
                (
                    symbol,
                    trade_id,
                    price,
                    amount,
                    side,
                    provider,
                    event_time_ms,
                ),
            )
            .and_then(|r| r.extract::<String>())
            .unwrap_or_else(|e| self.reason_of(e, py))
    }

    fn health_error(
        &self,
        provider: &str,
        state: &str,
        symbol: &str,
        event_time_ms: i64,
        reliability: f64,
        error_bps: f64,
        staleness_ms: f64,
        ticks: i64,
        errors: i64,
    ) -> String {
        let py = self.fallback.py();
        let args = (
            provider,
            state,
            symbol,
            event_time_ms,
            reliability,
            error_bps,
            staleness_ms,
            ticks,
            errors,
        );
        self.fallback
            .call_method1("health_error", args)
            .and_then(|r| r.extract::<String>())
            .unwrap_or_else(|e| self.reason_of(e, py))
    }
}

fn settings_from_json(data: &[u8]) -> PyResult<Settings> {
    let v: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| PyValueError::new_err(format!("settings_json: {e}")))?;
    let int = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| PyValueError::new_err(format!("settings_json: {k} is not an int")))
    };
    let map = |k: &str| -> PyResult<HashMap<String, i64>> {
        v.get(k)
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| PyValueError::new_err(format!("settings_json: {k} is not an object")))?
            .iter()
            .map(|(a, n)| {
                n.as_i64().map(|n| (a.clone(), n)).ok_or_else(|| {
                    PyValueError::new_err(format!("settings_json: {k}.{a} is not an int"))
                })
            })
            .collect()
    };
    Ok(Settings {
        grace_ms: int("grace_ms")?,
        throttle_ms: int("throttle_ms")?,
        quote_ms: int("quote_ms")?,
        health_every_ms: int("health_every_ms")?,
        dedup_ms: int("dedup_ms")?,
        stale_ms: map("stale_ms")?,
        max_symbols: int("max_symbols")?,
        max_ahead_ms: int("max_ahead_ms")?,
        max_age_ms: map("max_age_ms")?,
    })
}

fn output_tuple<'py>(
    py: Python<'py>,
    outputs: &Outputs,
    out: Output,
) -> PyResult<Bound<'py, PyTuple>> {
    let key = outputs.slice(&out.key).map(|k| PyBytes::new(py, k));
    let headers = match out.headers {
        Some(hs) => {
            let list = PyList::empty(py);
            for (name, value) in hs {
                list.append((name, PyBytes::new(py, &value)))?;
            }
            Some(list)
        }
        None => None,
    };
    let value = outputs.slice(&out.value).map(|v| PyBytes::new(py, v));
    (out.topic, key, value, out.partition, headers).into_pyobject(py)
}

/// The compiled `Processor` (agents/arbitration/core/processor.py), same interface.
#[pyclass(module = "fiml_arbcore")]
struct Core {
    processor: Processor,
    fallback: Py<PyAny>,
}

#[pymethods]
impl Core {
    #[new]
    fn new(settings_json: &[u8], fallback: Py<PyAny>) -> PyResult<Self> {
        Ok(Core {
            processor: Processor::new(settings_from_json(settings_json)?),
            fallback,
        })
    }

    /// Start `partition` from its saved mark (None: from nothing). Raises ValueError for a bad
    /// mark (engine.py turns it into the reference's own exception).
    #[pyo3(signature = (partition, mark))]
    fn restore(&mut self, partition: i64, mark: Option<&[u8]>) -> PyResult<()> {
        self.processor
            .restore(partition, mark)
            .map_err(|e| PyValueError::new_err(e.reason()))
    }

    fn forget(&mut self, partitions: &Bound<'_, PyAny>) -> PyResult<()> {
        let gone: Vec<i64> = partitions
            .try_iter()?
            .map(|p| p?.extract::<i64>())
            .collect::<PyResult<_>>()?;
        self.processor.forget(&gone);
        Ok(())
    }

    #[pyo3(signature = (key, value, partition, offset))]
    fn process(
        &mut self,
        py: Python<'_>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition: i64,
        offset: i64,
    ) -> PyResult<()> {
        let fallback = self.fallback.bind(py);
        let oracle = PyOracle::new(fallback);
        self.processor
            .process(key, value, partition, offset, &oracle);
        oracle.take_raised()
    }

    /// `process` for each (key, value, offset) of one fetch of `partition`: one call.
    fn process_many(
        &mut self,
        py: Python<'_>,
        partition: i64,
        records: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let fallback = self.fallback.bind(py);
        let oracle = PyOracle::new(fallback);
        for item in records.try_iter()? {
            let item = item?;
            // a value may be None (a tombstone): dead-lettered as the reference does
            type Item<'py> = (
                Option<Bound<'py, PyBytes>>,
                Option<Bound<'py, PyBytes>>,
                i64,
            );
            let (key, value, offset): Item<'_> = item.extract()?;
            let key = key.as_ref().map(|k| k.as_bytes());
            let value = value.as_ref().map(|v| v.as_bytes());
            self.processor
                .process(key, value, partition, offset, &oracle);
            oracle.take_raised()?; // as the reference: the records after it are not applied
        }
        Ok(())
    }

    fn mark<'py>(&mut self, py: Python<'py>, partition: i64) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.processor.mark(partition))
    }

    /// Partitions whose mark changed since it was last saved (a new set each time).
    #[getter]
    fn marks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        PySet::new(py, self.processor.marks.iter())
    }

    fn drain_partitions<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (p, mut outs) in self.processor.drain_partitions() {
            let list = PyList::empty(py);
            for out in std::mem::take(&mut outs.items) {
                list.append(output_tuple(py, &outs, out)?)?;
            }
            dict.set_item(p, list)?;
        }
        Ok(dict)
    }

    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut by_partition: Vec<_> = self.processor.drain_partitions().into_iter().collect();
        by_partition.sort_by_key(|(p, _)| *p);
        let list = PyList::empty(py);
        for (_, mut outs) in by_partition {
            for out in std::mem::take(&mut outs.items) {
                list.append(output_tuple(py, &outs, out)?)?;
            }
        }
        Ok(list)
    }

    fn resume_offset(&self, partition: i64) -> Option<i64> {
        self.processor.resume_offset(partition)
    }

    fn late_ticks(&self) -> i64 {
        self.processor.late_ticks()
    }

    /// The state's `to_bytes` (tests compare them with the reference's).
    fn symbol_state<'py>(
        &mut self,
        py: Python<'py>,
        partition: i64,
        symbol: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        match self.processor.symbol_state(partition, symbol) {
            Some(st) => Ok(PyBytes::new(py, &st.to_bytes())),
            None => Err(PyKeyError::new_err(symbol.to_owned())),
        }
    }

    #[getter]
    fn poison(&self) -> i64 {
        self.processor.poison
    }

    #[setter]
    fn set_poison(&mut self, value: i64) {
        self.processor.poison = value;
    }

    #[getter]
    fn out_of_time(&self) -> i64 {
        self.processor.out_of_time
    }

    #[setter]
    fn set_out_of_time(&mut self, value: i64) {
        self.processor.out_of_time = value;
    }

    #[getter]
    fn invalid(&self) -> i64 {
        self.processor.invalid
    }

    #[setter]
    fn set_invalid(&mut self, value: i64) {
        self.processor.invalid = value;
    }

    #[getter]
    fn skipped(&self) -> i64 {
        self.processor.skipped
    }

    #[setter]
    fn set_skipped(&mut self, value: i64) {
        self.processor.skipped = value;
    }
}

#[pymodule]
fn fiml_arbcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    // what build.rs hashed: engine.py compares it with the sources beside it
    m.add("SOURCE_FINGERPRINT", env!("FIML_ARBCORE_FINGERPRINT"))?;
    Ok(())
}
