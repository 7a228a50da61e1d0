//! The generated model and both codecs, without a server.
use serde_json::json;
use vmodl::value::Args;
use vmodl::{find_method, json as vjson, soap, types, Data, MoRef, TypeId, TypeRef, Value, VersionId};

fn v(wire: &str) -> VersionId {
    VersionId::by_wire("vim25", wire).unwrap()
}

#[test]
fn registry_is_complete_and_linked() {
    assert!(vmodl::schema::TYPES.len() > 4000);
    let sc = types::ServiceContent;
    assert_eq!(sc.def().vmodl, "vim.ServiceInstanceContent");
    assert!(sc.prop("rootFolder").map(|p| !p.optional).unwrap());
    // Inherited methods resolve on subtypes, with registry privileges.
    let m = find_method(types::Folder, "Destroy_Task").unwrap();
    assert_eq!(m.vmodl, "destroy");
    let m = find_method(types::Datastore, "UpdateVirtualMachineFiles_Task").unwrap();
    assert_eq!(m.privilege, Some("Datastore.UpdateVirtualMachineFiles"));
    assert_eq!(m.task_result.unwrap().ty, types::UpdateVirtualMachineFilesResult);
    let m = find_method(types::VcenterVStorageObjectManager, "VstorageObjectVCenterQueryChangedDiskAreas").unwrap();
    assert_eq!(m.privilege, Some("System.View"));
    let m = find_method(types::CnsVolumeManager, "CnsSyncVolume").unwrap();
    assert_eq!(m.version.def().name, "vsan.version.v9_1_0_0");
    assert!(types::NotAuthenticated.is_a(types::NoPermission) && types::NotAuthenticated.is_fault());
    assert!(find_method(types::Folder, "NoSuchMethod").is_none());
    assert!(TypeId::by_name("NoSuchType").is_none());
}

#[test]
fn releases_gate_members() {
    // UpdateVirtualMachineFiles_Task is 4.1-era: visible everywhere we serve.
    let m = find_method(types::Datastore, "UpdateVirtualMachineFiles_Task").unwrap();
    for r in ["8.0.1.0", "8.0.2.0", "8.0.3.0", "9.0.0.0", "9.1.0.0"] {
        assert!(v(r).includes(m.version), "{r}");
    }
    // Something introduced in 9.0 is not visible to an 8.0.1.0 client.
    let newer = vmodl::schema::TYPES
        .iter()
        .flat_map(|t| t.methods.iter())
        .find(|m| m.version.def().name == "vim.version.v9_0_0_0")
        .expect("a 9.0 method");
    assert!(!v("8.0.1.0").includes(newer.version));
    assert!(v("9.1.0.0").includes(newer.version));
}

#[test]
fn soap_request_decodes_with_xsi_types_and_arrays() {
    let xml = r#"<?xml version="1.0"?><Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Body><RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>Datastore</type><pathSet>name</pathSet><pathSet>summary</pathSet></propSet><objectSet><obj type="Folder">group-d1</obj><selectSet xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="TraversalSpec"><name>t</name><type>Folder</type><path>childEntity</path></selectSet></objectSet></specSet><options><maxObjects>10</maxObjects></options></RetrievePropertiesEx></Body></Envelope>"#;
    let req = soap::parse_request(xml).unwrap();
    assert_eq!(req.method, "RetrievePropertiesEx");
    assert_eq!(req.this, Some(("PropertyCollector".into(), "propertyCollector".into())));
    let m = find_method(types::PropertyCollector, "RetrievePropertiesEx").unwrap();
    let args = soap::decode_args(&req, m).unwrap();
    let spec = args.get("specSet").unwrap().as_array().unwrap()[0].as_data().unwrap().clone();
    let ps = spec.get("propSet").unwrap().as_array().unwrap()[0].as_data().unwrap();
    assert_eq!(ps.get("pathSet").unwrap().as_array().unwrap().len(), 2);
    let os = spec.get("objectSet").unwrap().as_array().unwrap()[0].as_data().unwrap();
    assert_eq!(os.get("obj").unwrap().as_moref().unwrap(), &MoRef::new(types::Folder, "group-d1"));
    let sel = os.get("selectSet").unwrap().as_array().unwrap()[0].as_data().unwrap();
    assert_eq!(sel.ty, types::TraversalSpec);
    let opts = args.get("options").unwrap().as_data().unwrap();
    assert_eq!(opts.get("maxObjects"), Some(&Value::Int(10)));
}

#[test]
fn soap_rejects_bad_input_with_typed_errors() {
    let m = find_method(types::ViewManager, "CreateContainerView").unwrap();
    let bad = |body: &str| {
        let xml = format!(
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
        );
        let req = soap::parse_request(&xml)?;
        soap::decode_args(&req, m)
    };
    assert!(matches!(
        bad("<CreateContainerView xmlns=\"urn:vim25\"><recursive>maybe</recursive></CreateContainerView>"),
        Err(vmodl::DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(
        bad("<CreateContainerView xmlns=\"urn:vim25\"><bogus>1</bogus></CreateContainerView>"),
        Err(vmodl::DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(bad("<CreateContainerView xmlns=\"urn:vim25\"><container type=\"NoSuchType\">x</container></CreateContainerView>"), Err(vmodl::DecodeError::InvalidValue { .. })));
    assert!(matches!(soap::parse_request("<notxml"), Err(vmodl::DecodeError::Malformed(_))));
    assert!(matches!(soap::parse_request("<Envelope><Body/></Envelope>"), Err(vmodl::DecodeError::Malformed(_))));
    // Namespaces count: the envelope's is SOAP 1.1's, the method's vim25's or vSAN's.
    let env = |ns: &str, method: &str| format!(r#"<e:Envelope xmlns:e="{ns}"><e:Body>{method}</e:Body></e:Envelope>"#);
    let rsc = r#"<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>"#;
    assert!(soap::parse_request(&env("http://schemas.xmlsoap.org/soap/envelope/", rsc)).is_ok());
    assert!(soap::parse_request(&env(
        "http://schemas.xmlsoap.org/soap/envelope/",
        &rsc.replace("urn:vim25", "urn:vsan")
    ))
    .is_ok());
    for (ns, method) in [
        ("http://www.w3.org/2003/05/soap-envelope", rsc.to_string()),
        ("urn:nothing", rsc.to_string()),
        ("http://schemas.xmlsoap.org/soap/envelope/", rsc.replace(r#" xmlns="urn:vim25""#, "")),
        ("http://schemas.xmlsoap.org/soap/envelope/", rsc.replace("urn:vim25", "urn:evil")),
    ] {
        assert!(
            matches!(soap::parse_request(&env(ns, &method)), Err(vmodl::DecodeError::Malformed(_))),
            "{ns} {method}"
        );
    }
}

#[test]
fn soap_reply_types_anytype_values() {
    let ver = v("9.1.0.0");
    let arr =
        Value::Array(types::ManagedObjectReference, vec![Value::MoRef(MoRef::new(types::Datacenter, "datacenter-2"))]);
    let out =
        soap::encode_response("Fetch", "urn:vim25", Some((&arr, TypeRef { ty: types::anyType, array: false })), ver);
    assert!(out.contains(r#"<returnval xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="Datacenter">datacenter-2</ManagedObjectReference></returnval>"#), "{out}");
    let dp = Data::new(types::DynamicProperty)
        .with("name", Value::Typed(types::PropertyPath, "info.state".into()))
        .with("val", Value::enum_value(types::TaskInfoState, "success"));
    let out = soap::encode_response(
        "X",
        "urn:vim25",
        Some((&dp.into(), TypeRef { ty: types::DynamicProperty, array: false })),
        ver,
    );
    assert!(out.contains(r#"<name>info.state</name><val xsi:type="TaskInfoState">success</val>"#), "{out}");
    let f = Data::new(types::NotFound).with("faultMessage", Value::Array(types::LocalizableMessage, vec![]));
    let out = soap::encode_fault(&f, "x < y", "urn:vim25", ver);
    assert!(
        out.contains(
            "<faultstring>x &lt; y</faultstring><detail><NotFoundFault xmlns=\"urn:vim25\" xsi:type=\"NotFound\">"
        ),
        "{out}"
    );
}

#[test]
fn json_boxes_primitives_and_flattens_localized_faults() {
    let ver = v("9.1.0.0");
    let any = TypeRef { ty: types::anyType, array: false };
    assert_eq!(vjson::encode(&Value::Int(5), any, ver), json!({"_typeName":"int","_value":5}));
    assert_eq!(vjson::encode(&Value::Long(5), TypeRef { ty: types::long, array: false }, ver), json!(5));
    assert_eq!(
        vjson::encode(&Value::MoRef(MoRef::new(types::Task, "task-1")), any, ver),
        json!({"_typeName":"ManagedObjectReference","type":"Task","value":"task-1"})
    );
    assert_eq!(
        vjson::encode(&Value::array_of_strings(["a"]), any, ver),
        json!({"_typeName":"ArrayOfString","_value":["a"]})
    );
    let lmf = Data::new(types::LocalizedMethodFault)
        .with("fault", Data::new(types::RequestCanceled))
        .with("localizedMessage", "canceled");
    assert_eq!(vjson::encode_data(&lmf, ver)["_typeName"], "RequestCanceled");
    // Decoding: boxed primitive in anyType, plain fault where SOAP has LocalizedMethodFault.
    let d = vjson::decode(&json!({"_typeName":"int","_value":7}), any, "v").unwrap().unwrap();
    assert_eq!(d, Value::Int(7));
    let d =
        vjson::decode(&json!({"_typeName":"NotFound"}), TypeRef { ty: types::LocalizedMethodFault, array: false }, "f")
            .unwrap()
            .unwrap();
    assert_eq!(d.as_data().unwrap().get("fault").unwrap().as_data().unwrap().ty, types::NotFound);
    // Wrong JSON types are errors, not guesses.
    let m = find_method(types::ViewManager, "CreateContainerView").unwrap();
    assert!(vjson::decode_args(&json!({"recursive":"true"}), m).is_err());
    assert!(vjson::decode_args(&json!({"container":"group-d1"}), m).is_err());
    let ok: Args = vjson::decode_args(&json!({"_typeName":"CreateContainerViewRequestType","container":{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"},"type":["Datastore"],"recursive":true}), m).unwrap();
    assert_eq!(ok.get("recursive"), Some(&Value::Bool(true)));
}

#[test]
fn soap_wraps_faults_in_method_fault_slots() {
    // failedVmFile[].fault is MethodFault in the registry and
    // LocalizedMethodFault in the WSDL; TaskInfo.error already holds one.
    let ver = v("9.1.0.0");
    let msg = Data::new(types::LocalizableMessage).with("key", "k").with("message", "cannot read");
    let fault = Data::new(types::FileFault)
        .with("file", "[ds] a.vmx")
        .with("faultMessage", Value::Array(types::LocalizableMessage, vec![msg.into()]));
    let info = Data::new(types::UpdateVirtualMachineFilesResultFailedVmFileInfo)
        .with("vmFile", "[ds] a.vmx")
        .with("fault", fault.clone());
    let out = soap::encode_response(
        "X",
        "urn:vim25",
        Some((&info.into(), TypeRef { ty: types::UpdateVirtualMachineFilesResultFailedVmFileInfo, array: false })),
        ver,
    );
    assert!(out.contains("<fault><fault xsi:type=\"FileFault\">"), "{out}");
    assert!(out.contains("<localizedMessage>cannot read</localizedMessage></fault>"), "{out}");
    let lmf = Data::new(types::LocalizedMethodFault).with("fault", fault).with("localizedMessage", "m");
    let ti = Data::new(types::TaskInfo).with("error", lmf);
    let out =
        soap::encode_response("X", "urn:vim25", Some((&ti.into(), TypeRef { ty: types::TaskInfo, array: false })), ver);
    assert_eq!(out.matches("<fault ").count() + out.matches("<fault>").count(), 1, "not wrapped twice: {out}");
}
