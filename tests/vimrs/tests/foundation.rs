//! vim_rs 0.7.0 against a real vtwin over TLS: login, ServiceContent,
//! RetrievePropertiesEx of every datastore's summary, InvalidLogin, Logout.
use vim_rs::core::client::{Error as ClientError, VimClientHandle};
use vim_rs::core::ClientBuilder;
use vim_rs::mo::{PropertyCollector, SessionManager, ViewManager};
use vim_rs::types::structs::{PropertyFilterSpec, RetrieveOptions};
use vim_rs::types::vim_any::VimAny;
use vtwin_vimrs_tests::{start as start_vtwin, Server, PW};

async fn start(datastores: usize) -> Server {
    start_vtwin(&format!("ds{datastores}"), &["--datastores", &datastores.to_string()]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn login_content_datastores_logout() {
    let srv = start(3).await;
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .app_details("vtwin-vimrs-tests", "0.1")
        .insecure(true)
        .build()
        .await
        .expect("login over TLS");
    let sc = client.service_content();
    assert_eq!(sc.root_folder.value, "group-d1");
    assert_eq!(sc.about.api_type, "VirtualCenter");
    assert!(sc.search_index.is_some() && sc.session_manager.is_some());

    let handle: VimClientHandle = client.clone();
    let vm = ViewManager::new(handle.clone(), &sc.view_manager.as_ref().unwrap().value);
    let view = vm
        .create_container_view(&sc.root_folder, Some(&["Datastore".to_string()]), true)
        .await
        .expect("container view");
    let spec: PropertyFilterSpec = miniserde::json::from_str(&format!(
        r#"{{"_typeName":"PropertyFilterSpec",
            "objectSet":[{{"_typeName":"ObjectSpec","obj":{{"_typeName":"ManagedObjectReference","type":"ContainerView","value":"{}"}},"skip":true,
              "selectSet":[{{"_typeName":"TraversalSpec","name":"v","type":"ContainerView","path":"view","skip":false}}]}}],
            "propSet":[{{"_typeName":"PropertySpec","type":"Datastore","pathSet":["summary"]}}]}}"#,
        view.value
    ))
    .expect("filter spec");
    let opts: RetrieveOptions = miniserde::json::from_str(r#"{"_typeName":"RetrieveOptions","maxObjects":2}"#).unwrap();
    let pc = PropertyCollector::new(handle.clone(), &sc.property_collector.value);
    let mut res =
        pc.retrieve_properties_ex(&[spec], &opts).await.expect("RetrievePropertiesEx").expect("some datastores");
    let mut objects = std::mem::take(&mut res.objects);
    let mut token = res.token.clone();
    while let Some(t) = token {
        let next = pc.continue_retrieve_properties_ex(&t).await.expect("ContinueRetrievePropertiesEx");
        objects.extend(next.objects);
        token = next.token;
    }
    assert_eq!(objects.len(), 3, "three datastores, paged two at a time");
    let mut names = vec![];
    for oc in &objects {
        let ps = oc.prop_set.as_ref().expect("propSet");
        assert_eq!(ps[0].name, "summary");
        let VimAny::Object(o) = &ps[0].val else { panic!("summary is an object") };
        let s: &vim_rs::types::structs::DatastoreSummary = o.as_any_ref().downcast_ref().expect("DatastoreSummary");
        assert!(s.capacity > 0 && s.free_space > 0 && s.free_space <= s.capacity, "real filesystem figures");
        assert!(s.url.starts_with("ds:///vmfs/volumes/"), "{}", s.url);
        names.push(s.name.clone());
    }
    names.sort();
    assert_eq!(names, vec!["LocalDS_0", "LocalDS_1", "LocalDS_2"]);

    // Logout ends the session: the next call is NotAuthenticated.
    let sm = SessionManager::new(handle.clone(), &sc.session_manager.as_ref().unwrap().value);
    sm.logout().await.expect("Logout");
    let err = sm.current_session().await.expect_err("session is gone");
    match &err {
        ClientError::MethodFault(f) => assert_eq!(format!("{:?}", f.type_), "Some(NotAuthenticated)"),
        other => panic!("expected NotAuthenticated, got {other:?}"),
    }
    drop(client);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_invalid_login() {
    let srv = start(1).await;
    let err = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", "not-the-password")
        .insecure(true)
        .build()
        .await
        .err()
        .expect("login must fail");
    match &err {
        ClientError::MethodFault(f) => assert_eq!(format!("{:?}", f.type_), "Some(InvalidLogin)"),
        other => panic!("expected InvalidLogin, got {other:?} ({err})"),
    }
}
