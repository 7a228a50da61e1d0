//! The test-control surface: rules that make calls and tasks slow or make
//! them fail, for people who test their clients against vtwin. A rule
//! matches a wire method name (`Rename_Task`, `CreateTask`) or a task type
//! (a task's descriptionId: `Folder.rename`, an extension's task type), and
//! optionally one object. It adds a delay, returns a fault synchronously, or
//! lets the task start and then fail asynchronously. `count` limits how many
//! times it fires, `probability` how often.
use super::Fault;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use vmodl::{json, TypeRef};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// The call returns the fault; no task is created.
    #[default]
    Sync,
    /// The task is created and returned, then ends in error with the fault.
    Task,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Assigned by the server.
    #[serde(default)]
    pub id: u64,
    /// Wire method name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Task type (descriptionId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// moId of the object called, or of the task's entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Milliseconds added before the call runs (or, for a task, while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The fault, in VI/JSON form: `{"_typeName": "InvalidArgument", …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<serde_json::Value>,
    /// Its message (faultMessage and the SOAP faultstring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub mode: FailMode,
    /// How many more times the rule fires; unset = always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Chance (0–1) that a matching call is affected; unset = 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// How many times the rule has fired.
    #[serde(default)]
    pub fired: u64,
}

/// What the matching rules ask for one call.
#[derive(Default, Debug, Clone)]
pub struct Effect {
    pub delay: Duration,
    pub sync_fault: Option<Fault>,
    pub task_fault: Option<Fault>,
}

/// Why a test-control rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRule(pub String);

impl From<&str> for InvalidRule {
    fn from(s: &str) -> InvalidRule {
        InvalidRule(s.into())
    }
}

impl From<String> for InvalidRule {
    fn from(s: String) -> InvalidRule {
        InvalidRule(s)
    }
}

impl Rule {
    /// Check a rule as given by a user: it names something to match and
    /// something to do, and its fault is a real fault type.
    pub fn validate(&self) -> Result<(), InvalidRule> {
        if self.method.is_none() && self.task_type.is_none() {
            return Err("a rule needs a method or a task_type to match".into());
        }
        if self.delay_ms.is_none() && self.fault.is_none() {
            return Err("a rule needs a delay_ms or a fault".into());
        }
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(InvalidRule(format!("probability {p} is not between 0 and 1")));
            }
        }
        if self.fault.is_some() {
            self.build_fault()?;
        }
        Ok(())
    }

    fn build_fault(&self) -> Result<Fault, InvalidRule> {
        let j = self.fault.as_ref().ok_or("no fault")?;
        let name = j.get("_typeName").and_then(|v| v.as_str()).ok_or("fault needs a _typeName")?;
        let ty = vmodl::TypeId::by_name(name)
            .filter(|t| t.is_fault())
            .ok_or_else(|| format!("{name} is not a fault type"))?;
        let message =
            self.message.clone().unwrap_or_else(|| format!("{name} injected by the vtwin test-control surface"));
        let mut f = Fault::new(ty, message);
        match json::decode(j, TypeRef { ty, array: false }, "fault") {
            Ok(Some(vmodl::Value::Data(d))) => {
                for (k, v) in &d.fields {
                    if *k != "faultMessage" {
                        f.data.set(k, v.clone());
                    }
                }
            }
            Ok(_) => {}
            Err(e) => return Err(InvalidRule(format!("fault: {e}"))),
        }
        Ok(f)
    }

    fn matches(&self, method: Option<&str>, task_type: Option<&str>, object: Option<&str>) -> bool {
        let m = match (&self.method, method) {
            (Some(want), Some(got)) => want == got,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let t = match (&self.task_type, task_type) {
            (Some(want), Some(got)) => want == got,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let o = match (&self.object, object) {
            (Some(want), Some(got)) => want == got,
            (Some(_), None) => false,
            (None, _) => true,
        };
        m && t && o && self.count != Some(0)
    }
}

#[derive(Default)]
pub struct Control {
    rules: Mutex<Vec<Rule>>,
    next: Mutex<u64>,
}

impl Control {
    pub fn add(&self, mut r: Rule) -> Result<Rule, InvalidRule> {
        r.validate()?;
        let mut next = self.next.lock();
        *next += 1;
        r.id = *next;
        r.fired = 0;
        self.rules.lock().push(r.clone());
        Ok(r)
    }
    pub fn list(&self) -> Vec<Rule> {
        self.rules.lock().clone()
    }
    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.lock();
        let n = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != n
    }
    pub fn clear(&self) {
        self.rules.lock().clear();
    }
    pub fn is_empty(&self) -> bool {
        self.rules.lock().is_empty()
    }

    /// Load rules from a JSON file: an array of rules.
    pub fn load_file(&self, path: &std::path::Path) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(path)?;
        let rules: Vec<Rule> = serde_json::from_str(&text)?;
        let n = rules.len();
        for r in rules {
            self.add(r).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        Ok(n)
    }

    /// Fire the rules matching a call or a task: the effects to apply.
    /// `task` says whether the call creates a task (so that mode `task`
    /// rules can apply).
    pub fn fire(&self, method: Option<&str>, task_type: Option<&str>, object: Option<&str>, task: bool) -> Effect {
        let mut eff = Effect::default();
        let mut rules = self.rules.lock();
        if rules.is_empty() {
            return eff;
        }
        for r in rules.iter_mut() {
            if !r.matches(method, task_type, object) {
                continue;
            }
            if r.fault.is_some() && r.mode == FailMode::Task && !task {
                continue;
            }
            if let Some(p) = r.probability {
                if rand::random::<f64>() >= p {
                    continue;
                }
            }
            if let Some(c) = r.count.as_mut() {
                *c -= 1;
            }
            r.fired += 1;
            if let Some(d) = r.delay_ms {
                eff.delay += Duration::from_millis(d);
            }
            if let Ok(f) = r.build_fault() {
                match r.mode {
                    FailMode::Sync if eff.sync_fault.is_none() => eff.sync_fault = Some(f),
                    FailMode::Task if eff.task_fault.is_none() => eff.task_fault = Some(f),
                    _ => {}
                }
            }
        }
        eff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(j: serde_json::Value) -> Rule {
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn count_probability_and_object_filters() {
        let c = Control::default();
        c.add(rule(serde_json::json!({"method": "Rename_Task", "object": "group-d1", "fault": {"_typeName": "InvalidName", "name": "x"}, "count": 2}))).unwrap();
        assert!(c.fire(Some("Rename_Task"), None, Some("datacenter-2"), true).sync_fault.is_none());
        let f = c.fire(Some("Rename_Task"), None, Some("group-d1"), true).sync_fault.unwrap();
        assert_eq!(f.type_name(), "InvalidName");
        assert_eq!(f.data.str("name"), Some("x"));
        assert!(c.fire(Some("Rename_Task"), None, Some("group-d1"), true).sync_fault.is_some());
        assert!(c.fire(Some("Rename_Task"), None, Some("group-d1"), true).sync_fault.is_none(), "count exhausted");
        c.add(rule(serde_json::json!({"task_type": "x.y", "fault": {"_typeName": "SystemError", "reason": "r"}, "probability": 0.0}))).unwrap();
        assert!(c.fire(None, Some("x.y"), None, true).sync_fault.is_none());
        assert!(c.add(rule(serde_json::json!({"method": "A", "fault": {"_typeName": "Folder"}}))).is_err());
        assert!(c.add(rule(serde_json::json!({"method": "A"}))).is_err());
    }
}
