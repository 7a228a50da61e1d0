//! SearchIndex: FindByInventoryPath and FindChild.
use crate::engine::inventory::Inventory;
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{MoRef, Value};

/// Children as an inventory path sees them: a datacenter's children are its
/// four folders, a compute resource's are its hosts.
fn find_child(inv: &Inventory, parent: &str, name: &str) -> Option<MoRef> {
    let p = inv.get(parent)?;
    p.children.iter().filter_map(|c| inv.get(c)).find(|c| c.name == name).map(|c| c.moref.clone())
}

fn by_path(inv: &Inventory, path: &str) -> Option<MoRef> {
    let mut cur = inv.root();
    for seg in path.trim_matches('/').split('/').filter(|s| !s.is_empty()) {
        let seg = seg.replace("%2f", "/").replace("%2F", "/");
        cur = find_child(inv, &cur.value, &seg)?;
    }
    Some(cur)
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "FindByInventoryPath" => {
            let path = args.str("inventoryPath").unwrap_or("");
            let found = by_path(&eng.inv.read(), path).filter(|r| eng.can_view(ctx, r));
            Ok(found.map(Value::MoRef))
        }
        "FindChild" => (|| {
            let e = args
                .get("entity")
                .and_then(Value::as_moref)
                .ok_or_else(|| Fault::invalid_argument("entity", "entity is required"))?;
            let e = eng.resolve(e)?;
            let name = args.str("name").unwrap_or("");
            let found = find_child(&eng.inv.read(), &e.value, name).filter(|r| eng.can_view(ctx, r));
            Ok(found.map(Value::MoRef))
        })(),
        _ => return None,
    })
}
