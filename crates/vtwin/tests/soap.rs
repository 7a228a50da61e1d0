//! SOAP wire rules (envelope, namespaces, xsi:type, faults, the session
//! cookie, vimServiceVersions.xml) against the real binary.
mod common;
use common::*;
use std::io::Read;

fn rsc() -> String {
    envelope(
        r#"<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>"#,
    )
}

#[test]
fn versions_files() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let v = ureq::get(&s.url("/sdk/vimServiceVersions.xml")).call().unwrap().into_string().unwrap();
    assert!(
        v.contains(r#"<namespaces version="1.0">"#)
            && v.contains("<name>urn:vim25</name>")
            && v.contains("<version>9.1.0.0</version>"),
        "{v}"
    );
    assert!(v.contains("<version>8.0.1.0</version>"));
    let v = ureq::get(&s.url("/sdk/vsanServiceVersions.xml")).call().unwrap().into_string().unwrap();
    assert!(v.contains("<name>urn:vsan</name>"), "{v}");
}

#[test]
fn service_content_sets_cookie_without_secure_on_http() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let (st, body, cookie) = s.soap(&rsc(), None);
    assert_eq!(st, 200);
    assert!(body.contains("<RetrieveServiceContentResponse xmlns=\"urn:vim25\">"), "{body}");
    assert!(body.contains(r#"<rootFolder type="Folder">group-d1</rootFolder>"#), "{body}");
    let c = cookie.expect("cookie");
    assert!(c.starts_with("vmware_soap_session=\""), "{c}");
    assert!(c.contains("HttpOnly") && !c.contains("Secure"), "{c}");
}

#[test]
fn unprefixed_chunked_envelope_and_raw_cookie_echo() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let cookie = s.soap_login(ADMIN, PW);
    // govmomi: unprefixed envelope, chunked body, bare SOAPAction.
    let body = r#"<?xml version="1.0" encoding="UTF-8"?><Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Body><RetrieveProperties xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>Datacenter</type><pathSet>name</pathSet></propSet><objectSet><obj type="Folder">group-d1</obj><selectSet xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="TraversalSpec"><name>f</name><type>Folder</type><path>childEntity</path><skip>false</skip></selectSet></objectSet></specSet></RetrieveProperties></Body></Envelope>"#;
    // pyvmomi echoes the whole raw Set-Cookie, attributes and all.
    let raw = format!("{cookie}; Path=/; HttpOnly;");
    let reader = std::io::Cursor::new(body.as_bytes().to_vec()).take(u64::MAX);
    let r = ureq::post(&s.url("/sdk")).set("Soapaction", "urn:vim25/7.0").set("Cookie", &raw).send(reader);
    let (st, out, _) = resp(r);
    assert_eq!(st, 200, "{out}");
    assert!(out.contains("<name>name</name><val xsi:type=\"xsd:string\">DC0</val>"), "{out}");
}

#[test]
fn fetch_reads_properties_with_typed_reply() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let cookie = s.soap_login(ADMIN, PW);
    let (st, out, _) = s.soap(
        &envelope(r#"<Fetch xmlns="urn:vim25"><_this versionId="9.1.0.0" type="ServiceInstance">ServiceInstance</_this><prop versionId="9.1.0.0">content</prop></Fetch>"#),
        Some(&cookie),
    );
    assert_eq!(st, 200, "{out}");
    assert!(out.contains(r#"<FetchResponse xmlns="urn:vim25"><returnval xsi:type="ServiceContent">"#), "{out}");
    let (st, out, _) = s.soap(
        &envelope(r#"<Fetch xmlns="urn:vim25"><_this type="Folder">group-d1</_this><prop>childEntity</prop></Fetch>"#),
        Some(&cookie),
    );
    assert_eq!(st, 200, "{out}");
    assert!(
        out.contains(
            r#"<returnval xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="Datacenter">"#
        ),
        "{out}"
    );
}

#[test]
fn faults_are_typed() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    // Unauthenticated: Fetch and RetrieveProperties are refused (unlike vcsim).
    let (st, out, _) = s.soap(&envelope(r#"<Fetch xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this><prop>content</prop></Fetch>"#), None);
    assert_eq!(st, 200, "ServiceInstance content is readable before Login: {out}");
    let (st, out, _) = s.soap(
        &envelope(r#"<Fetch xmlns="urn:vim25"><_this type="Folder">group-d1</_this><prop>name</prop></Fetch>"#),
        None,
    );
    assert_eq!(st, 500);
    assert!(out.contains(r#"<NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated">"#), "{out}");
    let (_, out, _) = s.soap(&envelope(r#"<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>administrator@vsphere.local</userName><password>wrong</password></Login>"#), None);
    assert!(out.contains("xsi:type=\"InvalidLogin\""), "{out}");
    let cookie = s.soap_login(ADMIN, PW);
    let (st, out, _) = s.soap(
        &envelope(r#"<NoSuchMethod xmlns="urn:vim25"><_this type="Folder">group-d1</_this></NoSuchMethod>"#),
        Some(&cookie),
    );
    assert_eq!(st, 500);
    assert!(out.contains("xsi:type=\"MethodNotFound\"") && out.contains("<method>NoSuchMethod</method>"), "{out}");
    let (_, out, _) = s.soap(
        &envelope(r#"<Fetch xmlns="urn:vim25"><_this type="Folder">group-nope</_this><prop>name</prop></Fetch>"#),
        Some(&cookie),
    );
    assert!(out.contains("xsi:type=\"ManagedObjectNotFound\""), "{out}");
    let (_, out, _) = s.soap(
        &envelope(
            r#"<Fetch xmlns="urn:vim25"><_this type="Folder">group-d1</_this><prop>noSuchProperty</prop></Fetch>"#,
        ),
        Some(&cookie),
    );
    assert!(out.contains("xsi:type=\"InvalidProperty\""), "{out}");
    let (st, out, _) = s.soap("<soapenv:Envelope><broken", Some(&cookie));
    assert_eq!(st, 500);
    assert!(out.contains("xsi:type=\"InvalidRequest\""), "{out}");
    // Wrong parameter type: an int where a string list is expected is fine,
    // but a boolean parameter that is not a boolean is an InvalidArgument.
    let (_, out, _) = s.soap(
        &envelope(r#"<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this><container type="Folder">group-d1</container><recursive>maybe</recursive></CreateContainerView>"#),
        Some(&cookie),
    );
    assert!(
        out.contains("xsi:type=\"InvalidArgument\"") && out.contains("<invalidProperty>recursive</invalidProperty>"),
        "{out}"
    );
}

#[test]
fn vsan_endpoint_shares_sessions_with_sdk() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let cookie = s.soap_login(ADMIN, PW);
    let body = envelope(
        r#"<Fetch xmlns="urn:vsan"><_this type="SessionManager">SessionManager</_this><prop>currentSession</prop></Fetch>"#,
    );
    let post = |c: Option<&str>| {
        let mut r = ureq::post(&s.url("/vsanHealth")).set("SOAPAction", "\"urn:vsan/9.1.0.0\"");
        if let Some(c) = c {
            r = r.set("Cookie", c);
        }
        resp(r.send_string(&body))
    };
    let (st, out, _) = post(Some(&cookie));
    assert_eq!(st, 200, "{out}");
    assert!(out.contains(r#"<FetchResponse xmlns="urn:vsan"><returnval xsi:type="UserSession">"#), "{out}");
    assert!(out.contains("<userName>VSPHERE.LOCAL\\administrator</userName>"), "{out}");
    let (st, out, _) = post(None);
    assert_eq!(st, 500);
    assert!(out.contains(r#"<NotAuthenticatedFault xmlns="urn:vsan" xsi:type="NotAuthenticated">"#), "{out}");
}
