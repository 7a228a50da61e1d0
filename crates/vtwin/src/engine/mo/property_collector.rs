//! PropertyCollector: RetrieveProperties(Ex) with TraversalSpec/SelectionSpec
//! traversal, paging with ContinueRetrievePropertiesEx.
use crate::engine::{Ctx, Engine, Fault, Reply};
use std::collections::{HashMap, HashSet};
use vmodl::value::Args;
use vmodl::{types, Data, Kind, MoRef, TypeId, TypeRef, Value};

/// A paged retrieval waiting for ContinueRetrievePropertiesEx.
pub struct Pending {
    pub session_key: String,
    pub rest: Vec<Value>,
    pub page: usize,
}

pub fn property(eng: &Engine, ctx: &Ctx, this: &MoRef, name: &str) -> Option<Value> {
    match name {
        "filter" => filters_property(eng, ctx, this),
        _ => None,
    }
}

/// Navigate `a.b.c` inside a value.
pub fn sub_path(v: &Value, path: &str) -> Option<Value> {
    let mut cur = v.clone();
    for seg in path.split('.') {
        cur = match cur {
            Value::Data(d) => d.get(seg)?.clone(),
            _ => return None,
        };
    }
    Some(cur)
}

/// Check a property path against the schema for objects of type `ty`.
fn valid_path(ty: TypeId, path: &str) -> bool {
    let mut segs = path.split('.');
    let Some(first) = segs.next() else { return false };
    let Some(mut p) = ty.prop(first) else { return false };
    for seg in segs {
        let t: TypeRef = p.ty;
        if t.array || t.ty.kind() != Kind::Data {
            return false;
        }
        match t.ty.prop(seg) {
            Some(q) => p = q,
            None => return false,
        }
    }
    true
}

struct PropSpec {
    ty: TypeId,
    all: bool,
    paths: Vec<String>,
}

fn list<'a>(d: &'a Data, name: &str) -> Vec<&'a Data> {
    d.get(name).and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).collect()
}

fn collect_named<'a>(sels: &[&'a Data], out: &mut HashMap<String, &'a Data>) {
    for s in sels {
        if s.ty == types::TraversalSpec {
            if let Some(n) = s.str("name") {
                if !n.is_empty() && !out.contains_key(n) {
                    out.insert(n.to_string(), s);
                    collect_named(&list(s, "selectSet"), out);
                    continue;
                }
            }
            collect_named(&list(s, "selectSet"), out);
        }
    }
}

struct Walker<'a> {
    eng: &'a Engine,
    ctx: &'a Ctx,
    named: HashMap<String, &'a Data>,
    seen: HashSet<(String, usize)>,
    out: Vec<MoRef>,
    included: HashSet<String>,
}

impl<'a> Walker<'a> {
    fn include(&mut self, r: MoRef) {
        if self.included.insert(r.value.clone()) {
            self.out.push(r);
        }
    }
    fn walk(&mut self, obj: &MoRef, sels: &[&'a Data]) -> Result<(), Fault> {
        for sel in sels {
            let ts: &'a Data = if sel.ty == types::TraversalSpec {
                sel
            } else {
                let name = sel.str("name").unwrap_or("");
                match self.named.get(name) {
                    Some(t) => t,
                    None => {
                        return Err(Fault::invalid_argument("selectSet", format!("no TraversalSpec is named '{name}'")))
                    }
                }
            };
            let tname = ts.str("type").unwrap_or("");
            let tty =
                TypeId::by_name(tname).ok_or_else(|| Fault::invalid_type("type", format!("unknown type {tname}")))?;
            if !obj.ty.is_a(tty) {
                continue;
            }
            let key = (obj.value.clone(), ts as *const Data as usize);
            if !self.seen.insert(key) {
                continue;
            }
            let path = ts.str("path").unwrap_or("");
            if !valid_path(tty, path) {
                return Err(Fault::invalid_property(path));
            }
            let top = path.split('.').next().unwrap_or(path);
            let v = super::property(self.eng, self.ctx, obj, top)?;
            let v = match path.split_once('.') {
                Some((_, rest)) => v.and_then(|v| sub_path(&v, rest)),
                None => v,
            };
            let targets: Vec<MoRef> = match v {
                Some(Value::MoRef(r)) => vec![r],
                Some(Value::Array(_, items)) => items.into_iter().filter_map(|i| i.as_moref().cloned()).collect(),
                _ => vec![],
            };
            let skip = ts.get("skip").and_then(Value::as_bool).unwrap_or(false);
            let next = list(ts, "selectSet");
            for t in targets {
                let Some(actual) = self.eng.object_type(&t.value) else { continue };
                let t = MoRef::new(actual, t.value);
                if !skip {
                    self.include(t.clone());
                }
                self.walk(&t, &next)?;
            }
        }
        Ok(())
    }
}

/// Evaluate filter specs into ObjectContent values.
pub fn retrieve(eng: &Engine, ctx: &Ctx, specs: &[&Data]) -> Result<Vec<Value>, Fault> {
    let mut result = vec![];
    for spec in specs {
        let mut props = vec![];
        for ps in list(spec, "propSet") {
            let tname = ps.str("type").unwrap_or("");
            let ty = TypeId::by_name(tname)
                .filter(|t| t.kind() == Kind::Managed)
                .ok_or_else(|| Fault::invalid_type("type", format!("{tname} is not a managed object type")))?;
            let paths: Vec<String> = ps
                .get("pathSet")
                .and_then(Value::as_array)
                .unwrap_or(&[])
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            for p in &paths {
                if !valid_path(ty, p) {
                    return Err(Fault::invalid_property(p));
                }
            }
            props.push(PropSpec { ty, all: ps.get("all").and_then(Value::as_bool).unwrap_or(false), paths });
        }
        let objsets = list(spec, "objectSet");
        let mut all_sels = vec![];
        for os in &objsets {
            all_sels.extend(list(os, "selectSet"));
        }
        let mut named = HashMap::new();
        collect_named(&all_sels, &mut named);
        let mut w = Walker { eng, ctx, named, seen: HashSet::new(), out: vec![], included: HashSet::new() };
        for os in &objsets {
            let r = os
                .get("obj")
                .and_then(Value::as_moref)
                .ok_or_else(|| Fault::invalid_argument("obj", "ObjectSpec.obj is required"))?;
            let r = eng.resolve(r)?;
            if !os.get("skip").and_then(Value::as_bool).unwrap_or(false) {
                w.include(r.clone());
            }
            w.walk(&r, &list(os, "selectSet"))?;
        }
        for obj in w.out {
            if !eng.can_view(ctx, &obj) {
                continue;
            }
            let mut paths: Vec<String> = vec![];
            let mut matched = false;
            for ps in &props {
                if !obj.ty.is_a(ps.ty) {
                    continue;
                }
                matched = true;
                if ps.all {
                    for p in obj.ty.all_props() {
                        if ctx.version.includes(p.version) && !paths.iter().any(|x| x == p.name) {
                            paths.push(p.name.to_string());
                        }
                    }
                }
                for p in &ps.paths {
                    if !paths.contains(p) {
                        paths.push(p.clone());
                    }
                }
            }
            if !matched {
                continue;
            }
            result.push(object_content(eng, ctx, &obj, &paths)?.into());
        }
    }
    Ok(result)
}

fn object_content(eng: &Engine, ctx: &Ctx, obj: &MoRef, paths: &[String]) -> Result<Data, Fault> {
    let mut set = vec![];
    let mut missing = vec![];
    let mut cache: HashMap<String, Option<Value>> = HashMap::new();
    for path in paths {
        let top = path.split('.').next().unwrap_or(path);
        let pdef = obj.ty.prop(top).ok_or_else(|| Fault::invalid_property(path))?;
        if let Some(privilege) = pdef.privilege {
            if let Err(f) = eng.check(ctx, obj, privilege) {
                missing.push(Value::from(
                    Data::new(types::MissingProperty)
                        .with("path", Value::Typed(types::PropertyPath, path.clone()))
                        .with("fault", f.data),
                ));
                continue;
            }
        }
        let v = match cache.get(top) {
            Some(v) => v.clone(),
            None => {
                let v = super::property(eng, ctx, obj, top)?;
                cache.insert(top.to_string(), v.clone());
                v
            }
        };
        let v = match path.split_once('.') {
            Some((_, rest)) => v.and_then(|v| sub_path(&v, rest)),
            None => v,
        };
        if let Some(v) = v {
            set.push(Value::from(
                Data::new(types::DynamicProperty)
                    .with("name", Value::Typed(types::PropertyPath, path.clone()))
                    .with("val", v),
            ));
        }
    }
    let mut oc = Data::new(types::ObjectContent).with("obj", obj.clone());
    if !set.is_empty() {
        oc.set("propSet", Value::Array(types::DynamicProperty, set));
    }
    if !missing.is_empty() {
        oc.set("missingSet", Value::Array(types::MissingProperty, missing));
    }
    Ok(oc)
}

fn specs(args: &Args) -> Vec<&Data> {
    args.get("specSet").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).collect()
}

fn page(eng: &Engine, ctx: &Ctx, mut objects: Vec<Value>, max: usize) -> Reply {
    if objects.is_empty() {
        return Ok(None);
    }
    let mut r = Data::new(types::RetrieveResult);
    if objects.len() > max {
        let rest = objects.split_off(max);
        let token = format!("{}", eng.next_seq());
        let key = ctx.session.as_ref().map(|s| s.key.clone()).unwrap_or_default();
        eng.retrievals.lock().insert(token.clone(), Pending { session_key: key, rest, page: max });
        r.set("token", token);
    }
    r.set("objects", Value::Array(types::ObjectContent, objects));
    Ok(Some(r.into()))
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "RetrieveProperties" => retrieve(eng, ctx, &specs(&args)).map(|v| Some(Value::Array(types::ObjectContent, v))),
        "RetrievePropertiesEx" => (|| {
            let max = args
                .get("options")
                .and_then(Value::as_data)
                .and_then(|o| o.get("maxObjects"))
                .and_then(Value::as_i64)
                .filter(|m| *m > 0)
                .map_or(100_000, |m| m as usize);
            let objects = retrieve(eng, ctx, &specs(&args))?;
            page(eng, ctx, objects, max)
        })(),
        "ContinueRetrievePropertiesEx" | "CancelRetrievePropertiesEx" => (|| {
            let token = args.str("token").unwrap_or("");
            let key = ctx.session.as_ref().map(|s| s.key.clone()).unwrap_or_default();
            let pending = {
                let mut m = eng.retrievals.lock();
                match m.get(token) {
                    Some(p) if p.session_key == key => m.remove(token),
                    _ => None,
                }
            };
            let p = pending.ok_or_else(|| Fault::invalid_argument("token", format!("unknown token '{token}'")))?;
            if method == "CancelRetrievePropertiesEx" {
                return Ok(None);
            }
            page(eng, ctx, p.rest, p.page)
        })(),
        _ => return invoke_updates(eng, ctx, this, method, &args),
    })
}

// ---- filters and waiting for updates ----------------------------------------

/// What one filter reported last: object → property path → value.
type Snapshot = std::collections::BTreeMap<String, (MoRef, std::collections::BTreeMap<String, Value>)>;

/// How many past versions a collector can resume from.
const HISTORY: usize = 16;

pub struct Filter {
    pub collector: String,
    pub spec: Data,
    pub partial_updates: bool,
}

#[derive(Default)]
pub struct Collector {
    /// Filter moIds, in creation order.
    filters: Vec<String>,
    /// (version, per-filter snapshot) for the versions handed out, newest last.
    history: std::collections::VecDeque<(u64, HashMap<String, Snapshot>)>,
    next_version: u64,
    cancel: std::sync::Arc<tokio::sync::Notify>,
}

/// All property collectors and filters. The default `propertyCollector` is
/// one per session; created ones and filters are `session[<key>]…` objects.
#[derive(Default)]
pub struct PcState {
    collectors: HashMap<String, Collector>,
    filters: HashMap<String, Filter>,
}

impl PcState {
    pub fn object_type(&self, moid: &str) -> Option<TypeId> {
        if self.filters.contains_key(moid) {
            Some(types::PropertyFilter)
        } else if moid.starts_with("session[") && self.collectors.contains_key(moid) {
            Some(types::PropertyCollector)
        } else {
            None
        }
    }
    pub fn drop_session(&mut self, key: &str) {
        let default = format!("{key}|propertyCollector");
        self.collectors.retain(|k, _| k != &default && crate::engine::session_of(k) != Some(key));
        self.filters.retain(|k, _| crate::engine::session_of(k) != Some(key));
    }
    pub fn filter(&self, moid: &str) -> Option<&Filter> {
        self.filters.get(moid)
    }
    pub fn destroy_filter(&mut self, moid: &str) {
        if let Some(f) = self.filters.remove(moid) {
            if let Some(c) = self.collectors.get_mut(&f.collector) {
                c.filters.retain(|x| x != moid);
            }
        }
    }
}

/// The collector a call addresses: the session's own default one, or a
/// created one.
fn collector_key(ctx: &Ctx, this: &MoRef) -> Result<String, Fault> {
    if this.value == "propertyCollector" {
        Ok(format!("{}|propertyCollector", ctx.session()?.key))
    } else {
        Ok(this.value.clone())
    }
}

pub fn filters_property(eng: &Engine, ctx: &Ctx, this: &MoRef) -> Option<Value> {
    let key = collector_key(ctx, this).ok()?;
    let pc = eng.pc.lock();
    let c = pc.collectors.get(&key)?;
    Some(super::refs(c.filters.iter().map(|f| MoRef::new(types::PropertyFilter, f.clone()))))
}

fn create_filter(eng: &Engine, ctx: &Ctx, this: &MoRef, args: &Args) -> Reply {
    let spec = args
        .get("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument("spec", "spec is required"))?
        .clone();
    // The spec must be valid now (types, paths, objects), as vCenter checks.
    retrieve(eng, ctx, &[&spec])?;
    let key = collector_key(ctx, this)?;
    let session = ctx.session()?.key.clone();
    let moid = format!("session[{session}]filter-{}", eng.next_seq());
    let partial_updates = args.get("partialUpdates").and_then(Value::as_bool).unwrap_or(false);
    let mut pc = eng.pc.lock();
    pc.collectors.entry(key.clone()).or_default().filters.push(moid.clone());
    pc.filters.insert(moid.clone(), Filter { collector: key, spec, partial_updates });
    drop(pc);
    // A wait already running on this collector delivers the new filter's enter set.
    eng.changed();
    Ok(Some(Value::MoRef(MoRef::new(types::PropertyFilter, moid))))
}

/// Current state of one filter's objects.
fn snapshot(eng: &Engine, ctx: &Ctx, spec: &Data) -> Snapshot {
    let mut snap = Snapshot::new();
    // An object that has gone (a pruned task) simply leaves.
    let Ok(objects) = retrieve(eng, ctx, &[spec]) else { return snap };
    for oc in objects {
        let Some(oc) = oc.as_data() else { continue };
        let Some(obj) = oc.get("obj").and_then(Value::as_moref) else { continue };
        let mut props = std::collections::BTreeMap::new();
        for p in oc.get("propSet").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data) {
            if let (Some(n), Some(v)) = (p.str("name"), p.get("val")) {
                props.insert(n.to_string(), v.clone());
            }
        }
        snap.insert(obj.value.clone(), (obj.clone(), props));
    }
    snap
}

fn change(name: &str, op: &str, val: Option<&Value>) -> Value {
    let mut d = Data::new(types::PropertyChange)
        .with("name", Value::Typed(types::PropertyPath, name.to_string()))
        .with("op", Value::enum_value(types::PropertyChangeOp, op));
    if let Some(v) = val {
        d.set("val", v.clone());
    }
    d.into()
}

fn object_update(kind: &str, obj: &MoRef, changes: Vec<Value>) -> Value {
    let mut d = Data::new(types::ObjectUpdate)
        .with("kind", Value::enum_value(types::ObjectUpdateKind, kind))
        .with("obj", obj.clone());
    if !changes.is_empty() {
        d.set("changeSet", Value::Array(types::PropertyChange, changes));
    }
    d.into()
}

/// Compute the updates since `version` ("" = since nothing). Returns None
/// when there are none.
pub fn poll(eng: &Engine, ctx: &Ctx, this: &MoRef, version: &str, max_objects: Option<usize>) -> Reply {
    let key = collector_key(ctx, this)?;
    let (filters, base) = baseline(eng, &key, version)?;
    let mut budget = Budget { left: max_objects.unwrap_or(usize::MAX), truncated: false };
    let mut filter_updates = vec![];
    let mut next_snap: HashMap<String, Snapshot> = HashMap::new();
    for (fid, spec) in &filters {
        let now = snapshot(eng, ctx, spec);
        let old = base.get(fid).cloned().unwrap_or_default();
        let (updates, reported) = diff(&now, old, &mut budget);
        if !updates.is_empty() {
            filter_updates.push(Value::from(
                Data::new(types::PropertyFilterUpdate)
                    .with("filter", MoRef::new(types::PropertyFilter, fid.clone()))
                    .with("objectSet", Value::Array(types::ObjectUpdate, updates)),
            ));
        }
        next_snap.insert(fid.clone(), reported);
    }
    if filter_updates.is_empty() {
        return Ok(None);
    }
    let mut pc = eng.pc.lock();
    let c = pc.collectors.entry(key).or_default();
    c.next_version += 1;
    let v = c.next_version;
    c.history.push_back((v, next_snap));
    while c.history.len() > HISTORY {
        c.history.pop_front();
    }
    let mut us = Data::new(types::UpdateSet)
        .with("version", v.to_string())
        .with("filterSet", Value::Array(types::PropertyFilterUpdate, filter_updates));
    if budget.truncated {
        us.set("truncated", true);
    }
    Ok(Some(us.into()))
}

/// The collector's filters (id, spec), and what it reported at `version`
/// per filter (nothing for the empty version): InvalidCollectorVersion for
/// a version it does not know, or no longer keeps.
fn baseline(eng: &Engine, key: &str, version: &str) -> Result<Baseline, Fault> {
    let mut pc = eng.pc.lock();
    let filters: Vec<(String, Data)> = match pc.collectors.get(key) {
        Some(c) => c.filters.iter().filter_map(|f| pc.filters.get(f).map(|x| (f.clone(), x.spec.clone()))).collect(),
        None => vec![],
    };
    let c = pc.collectors.entry(key.to_string()).or_default();
    if version.is_empty() {
        return Ok((filters, HashMap::new()));
    }
    let v: u64 = version.parse().map_err(|_| {
        Fault::new(types::InvalidCollectorVersion, format!("'{version}' is not a version of this collector"))
    })?;
    match c.history.iter().find(|(n, _)| *n == v) {
        Some((_, s)) => Ok((filters, s.clone())),
        None => Err(Fault::new(types::InvalidCollectorVersion, format!("version {version} is unknown or too old"))),
    }
}

/// A collector's filters (id, spec) and its snapshot per filter.
type Baseline = (Vec<(String, Data)>, HashMap<String, Snapshot>);

/// How many object updates a reply may still carry, and whether one was
/// left out for that.
struct Budget {
    left: usize,
    truncated: bool,
}

impl Budget {
    fn take(&mut self) -> bool {
        if self.left == 0 {
            self.truncated = true;
            return false;
        }
        self.left -= 1;
        true
    }
}

/// One filter's object updates from `old` to `now` (enter, modify with the
/// changed properties, leave), as far as the budget goes, and what has then
/// been reported.
fn diff(now: &Snapshot, old: Snapshot, budget: &mut Budget) -> (Vec<Value>, Snapshot) {
    let mut reported = old.clone();
    let mut updates = vec![];
    for (moid, (obj, props)) in now {
        let ups = match old.get(moid) {
            None => Some(("enter", props.iter().map(|(n, v)| change(n, "assign", Some(v))).collect::<Vec<_>>())),
            Some((_, before)) => {
                let mut cs: Vec<Value> = props
                    .iter()
                    .filter(|(n, v)| before.get(*n) != Some(*v))
                    .map(|(n, v)| change(n, "assign", Some(v)))
                    .collect();
                cs.extend(before.keys().filter(|n| !props.contains_key(*n)).map(|n| change(n, "remove", None)));
                (!cs.is_empty()).then_some(("modify", cs))
            }
        };
        if let Some((kind, cs)) = ups {
            if budget.take() {
                updates.push(object_update(kind, obj, cs));
                reported.insert(moid.clone(), (obj.clone(), props.clone()));
            }
        }
    }
    for (moid, (obj, _)) in &old {
        if !now.contains_key(moid) && budget.take() {
            updates.push(object_update("leave", obj, vec![]));
            reported.remove(moid);
        }
    }
    (updates, reported)
}

/// Wait for updates: `legacy` (WaitForUpdates) waits without limit;
/// WaitForUpdatesEx honours maxWaitSeconds (0 = check once) and
/// maxObjectUpdates. Waiters sleep on the engine's change signal.
pub async fn wait(eng: &Engine, ctx: &Ctx, this: &MoRef, legacy: bool, args: &Args) -> Reply {
    let version = args.str("version").unwrap_or("").to_string();
    let opts = if legacy { None } else { args.get("options").and_then(Value::as_data) };
    let max_wait = opts.and_then(|o| o.get("maxWaitSeconds")).and_then(Value::as_i64);
    let max_objects =
        opts.and_then(|o| o.get("maxObjectUpdates")).and_then(Value::as_i64).filter(|n| *n > 0).map(|n| n as usize);
    let key = collector_key(ctx, this)?;
    let cancel = eng.pc.lock().collectors.entry(key).or_default().cancel.clone();
    let mut rx = eng.changes.subscribe();
    let deadline = max_wait.map(|s| tokio::time::Instant::now() + std::time::Duration::from_secs(s.max(0) as u64));
    loop {
        rx.borrow_and_update();
        if let Some(u) = poll(eng, ctx, this, &version, max_objects)? {
            return Ok(Some(u));
        }
        if max_wait == Some(0) {
            return Ok(None);
        }
        let cancelled = cancel.notified();
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(None) },
            _ = cancelled => return Err(Fault::new(types::RequestCanceled, "The wait for updates was canceled.")),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return Ok(None),
        }
    }
}

pub fn invoke_updates(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: &Args) -> Option<Reply> {
    Some(match method {
        "CreateFilter" => create_filter(eng, ctx, this, args),
        "CheckForUpdates" => poll(eng, ctx, this, args.str("version").unwrap_or(""), None),
        "CancelWaitForUpdates" => collector_key(ctx, this).map(|k| {
            if let Some(c) = eng.pc.lock().collectors.get(&k) {
                c.cancel.notify_waiters();
            }
            None
        }),
        "CreatePropertyCollector" => ctx.session().map(|s| {
            let moid = format!("session[{}]pc-{}", s.key, eng.next_seq());
            eng.pc.lock().collectors.insert(moid.clone(), Collector::default());
            Some(Value::MoRef(MoRef::new(types::PropertyCollector, moid)))
        }),
        "DestroyPropertyCollector" => {
            if this.value == "propertyCollector" {
                return Some(Err(Fault::not_supported("the session's default property collector cannot be destroyed")));
            }
            let mut pc = eng.pc.lock();
            if let Some(c) = pc.collectors.remove(&this.value) {
                c.cancel.notify_waiters();
                for f in c.filters {
                    pc.filters.remove(&f);
                }
            }
            Ok(None)
        }
        _ => return None,
    })
}
