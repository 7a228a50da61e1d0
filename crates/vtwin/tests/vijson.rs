//! VI/JSON wire rules (paths under /sdk/vim25/{release}, `_typeName`, the
//! vmware-api-session-id header, faults as JSON) against the real binary.
mod common;
use common::*;

const R: &str = "/sdk/vim25/9.1.0.0";

#[test]
fn hello_and_anonymous_content() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let (st, b, _) = s.json(
        "POST",
        "/api/vcenter/system?action=hello",
        Some(r#"{"api_releases":["9.1.0.0","9.0.0.0","8.0.3.0","8.0.2.0","8.0.1.0"]}"#),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(json_value(&b)["api_release"], "9.1.0.0");
    let (_, b, _) = s.json("POST", "/api/vcenter/system?action=hello", Some(r#"{"api_releases":["7.0.3.0"]}"#), None);
    assert_eq!(json_value(&b)["api_release"], "");
    for rel in ["8.0.1.0", "8.0.2.0", "8.0.3.0", "9.0.0.0", "9.1.0.0"] {
        let (st, b, _) =
            s.json("GET", &format!("/sdk/vim25/{rel}/ServiceInstance/ServiceInstance/content"), None, None);
        assert_eq!(st, 200, "{rel}: {b}");
        let v = json_value(&b);
        assert_eq!(v["_typeName"], "ServiceContent");
        assert_eq!(
            v["rootFolder"],
            serde_json::json!({"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"})
        );
    }
}

#[test]
fn login_session_header_and_faults() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    // Not logged in.
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/name"), None, None);
    assert_eq!(st, 500);
    assert_eq!(json_value(&b)["_typeName"], "NotAuthenticated");
    // Wrong password.
    let (st, b, _) = s.json(
        "POST",
        &format!("{R}/SessionManager/SessionManager/Login"),
        Some(r#"{"_typeName":"Login","userName":"administrator@vsphere.local","password":"x","locale":"en_US"}"#),
        None,
    );
    assert_eq!(st, 500);
    assert_eq!(json_value(&b)["_typeName"], "InvalidLogin");
    let sid = s.json_login(ADMIN, PW);
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/name"), None, Some(&sid));
    assert_eq!((st, json_value(&b)), (200, serde_json::json!("Datacenters")));
    // Children via an ancestor type segment (ManagedEntity) works.
    let (st, b, _) = s.json("GET", &format!("{R}/ManagedEntity/group-d1/childEntity"), None, Some(&sid));
    assert_eq!(st, 200, "{b}");
    assert_eq!(json_value(&b)[0]["type"], "Datacenter");
    // Faults are 500 with the concrete fault.
    let (st, b, _) = s.json("POST", &format!("{R}/Folder/group-d1/CreateListView"), Some("{}"), Some(&sid));
    assert_eq!(st, 500);
    let v = json_value(&b);
    assert_eq!(v["_typeName"], "MethodNotFound");
    assert_eq!(v["method"], "CreateListView");
    assert_eq!(v["receiver"]["value"], "group-d1");
    let (st, b, _) = s.json("GET", &format!("{R}/NoSuchType/group-d1/name"), None, Some(&sid));
    assert_eq!((st, json_value(&b)["_typeName"].as_str().unwrap()), (500, "InvalidRequest"));
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/group-404/name"), None, Some(&sid));
    assert_eq!((st, json_value(&b)["_typeName"].as_str().unwrap()), (500, "ManagedObjectNotFound"));
    let (st, b, _) =
        s.json("POST", &format!("{R}/ViewManager/ViewManager/CreateListView"), Some("{not json"), Some(&sid));
    assert_eq!((st, json_value(&b)["_typeName"].as_str().unwrap()), (500, "InvalidRequest"));
    let (st, b, _) = s.json("POST", &format!("{R}/ViewManager/ViewManager/CreateContainerView"), Some(r#"{"container":{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"},"type":["Datastore"],"recursive":"yes"}"#), Some(&sid));
    let v = json_value(&b);
    assert_eq!(
        (st, v["_typeName"].as_str().unwrap(), v["invalidProperty"].as_str().unwrap()),
        (500, "InvalidArgument", "recursive")
    );
    let (st, b, _) = s.json("GET", "/sdk/vim25/7.0.0.0/Folder/group-d1/name", None, Some(&sid));
    assert_eq!((st, json_value(&b)["_typeName"].as_str().unwrap()), (500, "InvalidRequest"));
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/noSuchProperty"), None, Some(&sid));
    assert_eq!((st, json_value(&b)["_typeName"].as_str().unwrap()), (500, "InvalidProperty"));
    // Logout: no body, empty 2xx; the session is then gone.
    let (st, b, _) = s.json("POST", &format!("{R}/SessionManager/SessionManager/Logout"), None, Some(&sid));
    assert_eq!((st, b.as_str()), (204, ""));
    let (st, _, _) = s.json("GET", &format!("{R}/Folder/group-d1/name"), None, Some(&sid));
    assert_eq!(st, 500);
}

#[test]
fn session_scoped_ids_keep_brackets_and_void_is_204() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--datastores", "2"]);
    let sid = s.json_login(ADMIN, PW);
    let (st, b, _) = s.json(
        "POST",
        &format!("{R}/ViewManager/ViewManager/CreateContainerView"),
        Some(r#"{"_typeName":"CreateContainerViewRequestType","container":{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"},"type":["Datastore"],"recursive":true}"#),
        Some(&sid),
    );
    assert_eq!(st, 200, "{b}");
    let view = json_value(&b)["value"].as_str().unwrap().to_string();
    assert!(view.starts_with("session[") && view.contains(']'), "{view}");
    // The raw moId, brackets unencoded, in the path.
    let (st, b, _) = s.json("GET", &format!("{R}/ContainerView/{view}/view"), None, Some(&sid));
    assert_eq!(st, 200, "{b}");
    assert_eq!(json_value(&b).as_array().unwrap().len(), 2);
    let (st, b, _) = s.json("POST", &format!("{R}/ContainerView/{view}/DestroyView"), None, Some(&sid));
    assert_eq!((st, b.as_str()), (204, ""));
    let (st, _, _) = s.json("GET", &format!("{R}/ContainerView/{view}/view"), None, Some(&sid));
    assert_eq!(st, 500);
}

#[test]
fn retrieve_properties_ex_pages_and_boxes_primitives() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--datastores", "5"]);
    let sid = s.json_login(ADMIN, PW);
    let spec = r#"{"specSet":[{"_typeName":"PropertyFilterSpec","propSet":[{"_typeName":"PropertySpec","type":"Datastore","pathSet":["name","summary.capacity"]}],
      "objectSet":[{"_typeName":"ObjectSpec","obj":{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"},"skip":true,"selectSet":[
        {"_typeName":"TraversalSpec","name":"f2dc","type":"Folder","path":"childEntity","skip":true,"selectSet":[{"_typeName":"SelectionSpec","name":"dc2ds"}]},
        {"_typeName":"TraversalSpec","name":"dc2ds","type":"Datacenter","path":"datastore","skip":false}]}]}],
      "options":{"_typeName":"RetrieveOptions","maxObjects":2}}"#;
    let (st, b, _) = s.json(
        "POST",
        &format!("{R}/PropertyCollector/propertyCollector/RetrievePropertiesEx"),
        Some(spec),
        Some(&sid),
    );
    assert_eq!(st, 200, "{b}");
    let mut v = json_value(&b);
    let mut names = vec![];
    loop {
        for oc in v["objects"].as_array().unwrap() {
            let ps = oc["propSet"].as_array().unwrap();
            let name = ps.iter().find(|p| p["name"] == "name").unwrap();
            assert_eq!(name["val"]["_typeName"], "string");
            names.push(name["val"]["_value"].as_str().unwrap().to_string());
            let cap = ps.iter().find(|p| p["name"] == "summary.capacity").unwrap();
            assert_eq!(cap["val"]["_typeName"], "long");
            assert!(cap["val"]["_value"].as_i64().unwrap() > 0);
        }
        let Some(tok) = v["token"].as_str() else { break };
        let (st, b, _) = s.json(
            "POST",
            &format!("{R}/PropertyCollector/propertyCollector/ContinueRetrievePropertiesEx"),
            Some(&format!(r#"{{"token":"{tok}"}}"#)),
            Some(&sid),
        );
        assert_eq!(st, 200, "{b}");
        v = json_value(&b);
    }
    names.sort();
    assert_eq!(names, ["LocalDS_0", "LocalDS_1", "LocalDS_2", "LocalDS_3", "LocalDS_4"]);
}

#[test]
fn views_belong_to_their_session_and_end_with_it() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let a = s.json_login(ADMIN, PW);
    let b = s.json_login(ADMIN, PW);
    let (_, body, _) = s.json(
        "POST",
        &format!("{R}/ViewManager/ViewManager/CreateListView"),
        Some(r#"{"obj":[{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"}]}"#),
        Some(&a),
    );
    let view = json_value(&body)["value"].as_str().unwrap().to_string();
    let (st, body, _) = s.json("GET", &format!("{R}/ListView/{view}/view"), None, Some(&a));
    assert_eq!(st, 200, "{body}");
    let (st, body, _) = s.json("GET", &format!("{R}/ListView/{view}/view"), None, Some(&b));
    assert_eq!((st, json_value(&body)["_typeName"].as_str().unwrap()), (500, "ManagedObjectNotFound"));
    // ModifyListView reports objects that do not exist.
    let (st, body, _) = s.json(
        "POST",
        &format!("{R}/ListView/{view}/ModifyListView"),
        Some(r#"{"add":[{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-nope"}],"remove":[{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"}]}"#),
        Some(&a),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json_value(&body)[0]["value"], "group-nope");
    let (_, body, _) = s.json("GET", &format!("{R}/ListView/{view}/view"), None, Some(&a));
    assert_eq!(json_value(&body), serde_json::json!([]));
    s.json("POST", &format!("{R}/SessionManager/SessionManager/Logout"), None, Some(&a));
    let a2 = s.json_login(ADMIN, PW);
    let (st, _, _) = s.json("GET", &format!("{R}/ListView/{view}/view"), None, Some(&a2));
    assert_eq!(st, 500, "the view ended with its session");
}

#[test]
fn session_manager_locale_terminate_and_is_active() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let a = s.json_login(ADMIN, PW);
    let b = s.json_login(ADMIN, PW);
    let (st, _, _) =
        s.json("POST", &format!("{R}/SessionManager/SessionManager/SetLocale"), Some(r#"{"locale":"de"}"#), Some(&a));
    assert_eq!(st, 204);
    let (_, body, _) = s.json("GET", &format!("{R}/SessionManager/SessionManager/currentSession"), None, Some(&a));
    let cur = json_value(&body);
    assert_eq!(cur["locale"], "de");
    let key_a = cur["key"].as_str().unwrap().to_string();
    let active = |user: &str| {
        let body = format!(r#"{{"sessionID":"{key_a}","userName":"{user}"}}"#);
        let (st, b, _) =
            s.json("POST", &format!("{R}/SessionManager/SessionManager/SessionIsActive"), Some(&body), Some(&b));
        assert_eq!(st, 200, "{b}");
        json_value(&b)
    };
    assert_eq!(active("administrator@vsphere.local"), serde_json::json!(true));
    assert_eq!(active("someone@vsphere.local"), serde_json::json!(false));
    // An unknown id terminates nothing; a known one ends that session.
    let (st, body, _) = s.json(
        "POST",
        &format!("{R}/SessionManager/SessionManager/TerminateSession"),
        Some(&format!(r#"{{"sessionId":["{key_a}","nope"]}}"#)),
        Some(&b),
    );
    assert_eq!((st, json_value(&body)["_typeName"].as_str().unwrap()), (500, "NotFound"));
    assert_eq!(s.json("GET", &format!("{R}/Folder/group-d1/name"), None, Some(&a)).0, 200);
    let (st, _, _) = s.json(
        "POST",
        &format!("{R}/SessionManager/SessionManager/TerminateSession"),
        Some(&format!(r#"{{"sessionId":["{key_a}"]}}"#)),
        Some(&b),
    );
    assert_eq!(st, 204);
    assert_eq!(s.json("GET", &format!("{R}/Folder/group-d1/name"), None, Some(&a)).0, 500);
    assert_eq!(active("administrator@vsphere.local"), serde_json::json!(false));
}
