//! Static tables generated at build time from `schema/vmodl.json`.
use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TypeId(pub u16);

#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct VersionId(pub u16);

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Kind {
    Primitive,
    Data,
    Managed,
    Enum,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct TypeRef {
    pub ty: TypeId,
    pub array: bool,
}

#[derive(Debug)]
pub struct VersionDef {
    pub name: &'static str,
    pub ns: &'static str,
    pub wire: &'static str,
    pub service: &'static str,
    pub parents: &'static [u16],
}

#[derive(Debug)]
pub struct PropDef {
    pub name: &'static str,
    pub ty: TypeRef,
    pub version: VersionId,
    pub optional: bool,
    pub link: bool,
    pub secret: bool,
    pub privilege: Option<&'static str>,
}

#[derive(Debug)]
pub struct MethodDef {
    pub name: &'static str,
    pub vmodl: &'static str,
    pub version: VersionId,
    pub params: &'static [PropDef],
    pub result: Option<TypeRef>,
    pub result_optional: bool,
    /// For `*_Task` methods: the type of `TaskInfo.result`.
    pub task_result: Option<TypeRef>,
    pub privilege: Option<&'static str>,
    pub faults: &'static [TypeId],
}

#[derive(Debug)]
pub struct TypeDef {
    pub name: &'static str,
    pub vmodl: &'static str,
    pub kind: Kind,
    pub base: Option<TypeId>,
    pub version: VersionId,
    pub props: &'static [PropDef],
    pub methods: &'static [MethodDef],
    pub values: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/schema.rs"));

impl TypeId {
    pub fn def(self) -> &'static TypeDef {
        &TYPES[self.0 as usize]
    }
    pub fn name(self) -> &'static str {
        self.def().name
    }
    pub fn kind(self) -> Kind {
        self.def().kind
    }
    pub fn by_name(name: &str) -> Option<TypeId> {
        static INDEX: OnceLock<HashMap<&'static str, TypeId>> = OnceLock::new();
        INDEX
            .get_or_init(|| TYPES.iter().enumerate().map(|(i, t)| (t.name, TypeId(i as u16))).collect())
            .get(name)
            .copied()
    }
    /// True if `self` is `other` or derives from it.
    pub fn is_a(self, other: TypeId) -> bool {
        let mut t = Some(self);
        while let Some(x) = t {
            if x == other {
                return true;
            }
            t = x.def().base;
        }
        false
    }
    /// Every property, inherited ones first (the wire order).
    pub fn all_props(self) -> &'static [&'static PropDef] {
        static CACHE: OnceLock<Vec<Vec<&'static PropDef>>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| {
            (0..TYPES.len())
                .map(|i| {
                    let mut chain = vec![];
                    let mut t = Some(TypeId(i as u16));
                    while let Some(x) = t {
                        chain.push(x);
                        t = x.def().base;
                    }
                    chain.iter().rev().flat_map(|x| x.def().props.iter()).collect()
                })
                .collect()
        });
        &cache[self.0 as usize]
    }
    pub fn prop(self, name: &str) -> Option<&'static PropDef> {
        self.all_props().iter().copied().find(|p| p.name == name)
    }
    /// A method of this managed type or of one of its bases, by wire name.
    pub fn method(self, wire_name: &str) -> Option<&'static MethodDef> {
        static CACHE: OnceLock<HashMap<(u16, &'static str), &'static MethodDef>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| {
            let mut m = HashMap::new();
            for (i, t) in TYPES.iter().enumerate() {
                for md in t.methods {
                    m.insert((i as u16, md.name), md);
                }
            }
            m
        });
        let mut t = Some(self);
        while let Some(x) = t {
            if let Some(md) = cache.get(&(x.0, wire_name)) {
                return Some(md);
            }
            t = x.def().base;
        }
        None
    }
    pub fn is_primitive(self) -> bool {
        self.kind() == Kind::Primitive
    }
    pub fn is_fault(self) -> bool {
        self.is_a(types::MethodFault)
    }
}

impl VersionId {
    pub fn def(self) -> &'static VersionDef {
        &VERSIONS[self.0 as usize]
    }
    pub fn by_name(name: &str) -> Option<VersionId> {
        VERSIONS.iter().position(|v| v.name == name).map(|i| VersionId(i as u16))
    }
    /// The version of namespace `ns` ("vim25", "vsan") with wire id `wire`.
    pub fn by_wire(ns: &str, wire: &str) -> Option<VersionId> {
        VERSIONS.iter().position(|v| v.ns == ns && v.wire == wire).map(|i| VersionId(i as u16))
    }
    /// True if something introduced in `item` is visible to a client speaking `self`.
    pub fn includes(self, item: VersionId) -> bool {
        self == item || self.def().parents.binary_search(&item.0).is_ok()
    }
}

/// `Fetch(prop)`: the vmodl runtime's internal property read, which pyvmomi 9
/// uses for every property access. It is part of no WSDL and so of no
/// registry module; its single parameter and anyType result are the
/// runtime's own.
pub static FETCH: MethodDef = MethodDef {
    name: "Fetch",
    vmodl: "fetch",
    version: VersionId(0),
    params: &[PropDef {
        name: "prop",
        ty: TypeRef { ty: types::string, array: false },
        version: VersionId(0),
        optional: false,
        link: false,
        secret: false,
        privilege: None,
    }],
    result: Some(TypeRef { ty: types::anyType, array: false }),
    result_optional: true,
    task_result: None,
    privilege: None,
    faults: &[],
};

/// Look up a method on a managed type, including the runtime's `Fetch`.
pub fn find_method(ty: TypeId, wire_name: &str) -> Option<&'static MethodDef> {
    if wire_name == "Fetch" {
        return Some(&FETCH);
    }
    ty.method(wire_name)
}
