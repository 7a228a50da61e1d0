#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: small real inputs
taken from the test suite (crates/*/tests, tests/python), in the framing each
target expects (see the comment at the top of fuzz/fuzz_targets/<target>.rs).
Run it again after changing a target's framing; the files are committed."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- soap: SOAP envelopes (crates/vtwin/tests/soap.rs, store.rs, crates/vmodl/tests/codec.rs)
def envelope(body):
    return ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>' + body + '</soapenv:Body></soapenv:Envelope>')


put("soap", "retrieve_service_content", envelope('<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>'))
put("soap", "login", envelope('<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>administrator@vsphere.local</userName><password>wrong</password></Login>'))
put("soap", "fetch", envelope('<Fetch xmlns="urn:vim25"><_this versionId="9.1.0.0" type="ServiceInstance">ServiceInstance</_this><prop versionId="9.1.0.0">content</prop></Fetch>'))
put("soap", "retrieve_properties_ex", '<?xml version="1.0"?><Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Body><RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>Datastore</type><pathSet>name</pathSet><pathSet>summary</pathSet></propSet><objectSet><obj type="Folder">group-d1</obj><selectSet xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="TraversalSpec"><name>t</name><type>Folder</type><path>childEntity</path></selectSet></objectSet></specSet><options><maxObjects>10</maxObjects></options></RetrievePropertiesEx></Body></Envelope>')
put("soap", "create_container_view", envelope('<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this><container type="Folder">group-d1</container><type>VirtualMachine</type><recursive>true</recursive></CreateContainerView>'))
put("soap", "create_disk", envelope('<CreateDisk_Task xmlns="urn:vim25"><_this type="VcenterVStorageObjectManager">VStorageObjectManager</_this><spec><name>d1</name><keepAfterDeleteVm>true</keepAfterDeleteVm><backingSpec xsi:type="VslmCreateSpecDiskFileBackingSpec"><datastore type="Datastore">datastore-1</datastore><provisioningType>thin</provisioningType></backingSpec><capacityInMB>16</capacityInMB><metadata><key>k</key><value>v</value></metadata></spec></CreateDisk_Task>'))
put("soap", "set_task_state", envelope('<SetTaskState xmlns="urn:vim25"><_this type="Task">task-1</_this><state>error</state><fault xsi:type="LocalizedMethodFault"><fault xsi:type="SystemError"><reason>x</reason></fault><localizedMessage>m</localizedMessage></fault><result xsi:type="xsd:int">5</result></SetTaskState>'))
put("soap", "reconfig_vm", envelope('<ReconfigVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">vm-1</_this><spec><deviceChange><operation>add</operation><fileOperation>create</fileOperation><device xsi:type="VirtualDisk"><key>-1</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[LocalDS_0] vm/d.vmdk</fileName><diskMode>persistent</diskMode><thinProvisioned>true</thinProvisioned></backing><controllerKey>1000</controllerKey><unitNumber>1</unitNumber><capacityInKB>1024</capacityInKB></device></deviceChange><extraConfig><key>a</key><value xsi:type="xsd:string">b</value></extraConfig></spec></ReconfigVM_Task>'))
put("soap", "update_vm_files", envelope('<UpdateVirtualMachineFiles_Task xmlns="urn:vim25"><_this type="Datastore">datastore-1</_this><mountPathDatastoreMapping><oldMountPath>/vmfs/volumes/old</oldMountPath><datastore type="Datastore">datastore-1</datastore></mountPathDatastoreMapping></UpdateVirtualMachineFiles_Task>'))

# --- vijson: selector byte (method index in METHODS, or 0x80|type index) + JSON body
METHODS = ["Login", "LoginByToken", "RetrievePropertiesEx", "CreateFilter", "WaitForUpdatesEx", "CreateDisk_Task",
           "VCenterUpdateVStorageObjectMetadataEx_Task", "VstorageObjectVCenterQueryChangedDiskAreas", "CnsCreateVolume",
           "CnsQueryVolume", "CnsAttachVolume", "SetTaskState", "UpdateProgress", "CreateTask", "CreateCollectorForTasks",
           "ResignatureUnresolvedVmfsVolume_Task", "QueryConnectionInfoViaSpec", "UpdateVirtualMachineFiles_Task",
           "CreateVM_Task", "ReconfigVM_Task", "CreateSnapshotEx_Task", "CreateContainerView", "SetEntityPermissions",
           "RegisterExtension", "CreateCollectorForEvents", "RetrieveServiceContent"]


def vij(name, method, body):
    put("vijson", name, bytes([METHODS.index(method)]) + json.dumps(body).encode())


moref = lambda t, v: {"_typeName": "ManagedObjectReference", "type": t, "value": v}
vij("login", "Login", {"_typeName": "LoginRequestType", "userName": "administrator@vsphere.local", "password": "x"})
vij("retrieve_properties_ex", "RetrievePropertiesEx", {"specSet": [{"_typeName": "PropertyFilterSpec", "propSet": [{"_typeName": "PropertySpec", "type": "Folder", "pathSet": ["name"]}], "objectSet": [{"_typeName": "ObjectSpec", "obj": moref("Folder", "group-d1"), "selectSet": [{"_typeName": "TraversalSpec", "name": "t", "type": "Folder", "path": "childEntity"}]}]}], "options": {"_typeName": "RetrieveOptions", "maxObjects": 10}})
vij("wait_for_updates_ex", "WaitForUpdatesEx", {"version": "1", "options": {"_typeName": "WaitOptions", "maxWaitSeconds": 0}})
vij("create_disk", "CreateDisk_Task", {"spec": {"_typeName": "VslmCreateSpec", "name": "limits", "capacityInMB": 16, "backingSpec": {"_typeName": "VslmCreateSpecDiskFileBackingSpec", "datastore": moref("Datastore", "datastore-1"), "provisioningType": "thin"}}})
vij("create_task", "CreateTask", {"obj": moref("Folder", "group-d1"), "taskTypeId": "com.example.backup.run", "cancelable": True})
vij("set_task_state", "SetTaskState", {"state": "error", "fault": {"_typeName": "LocalizedMethodFault", "fault": {"_typeName": "SystemError", "reason": "disk on fire"}, "localizedMessage": "m"}, "result": {"_typeName": "int", "_value": 5}})
vij("register_extension", "RegisterExtension", {"extension": {"_typeName": "Extension", "key": "com.example.backup", "version": "1.0", "description": {"_typeName": "Description", "label": "Backup", "summary": "Backup"}, "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.example.backup.run"}], "lastHeartbeatTime": "2024-01-01T00:00:00Z"}})
vij("cns_create_volume", "CnsCreateVolume", {"createSpecs": [{"_typeName": "CnsVolumeCreateSpec", "name": "pvc-1", "volumeType": "BLOCK", "datastores": [moref("Datastore", "datastore-1")], "metadata": {"_typeName": "CnsVolumeMetadata", "containerCluster": {"_typeName": "CnsContainerCluster", "clusterType": "KUBERNETES", "clusterId": "c1", "vSphereUser": "u"}}, "backingObjectDetails": {"_typeName": "CnsBlockBackingDetails", "capacityInMb": 16}}]})
vij("update_vm_files", "UpdateVirtualMachineFiles_Task", {"mountPathDatastoreMapping": [{"_typeName": "DatastoreMountPathDatastorePair", "oldMountPath": "/vmfs/volumes/old", "datastore": moref("Datastore", "datastore-1")}]})
vij("create_vm", "CreateVM_Task", {"config": {"_typeName": "VirtualMachineConfigSpec", "name": "vm1", "guestId": "otherGuest", "files": {"_typeName": "VirtualMachineFileInfo", "vmPathName": "[LocalDS_0]"}, "numCPUs": 1, "memoryMB": 128, "deviceChange": [{"_typeName": "VirtualDeviceConfigSpec", "operation": "add", "device": {"_typeName": "VirtualLsiLogicController", "key": 1000, "busNumber": 0, "sharedBus": "noSharing"}}]}, "pool": moref("ResourcePool", "resgroup-1")})
put("vijson", "any_type_boxed", bytes([0x80]) + json.dumps({"_typeName": "ArrayOfString", "_value": ["a", "b"]}).encode())

# --- vapi: selector (% 4: 0 update spec, 1 values, 2 JSON-RPC, 3 REST) + JSON
put("vapi", "update_spec", b"\x00" + json.dumps({"status": "FAILED", "percent_done": {"total": 100, "completed": 40}, "description": {"id": "x", "default_message": "d", "args": []}, "error": {"error_type": "NOT_FOUND", "messages": [{"id": "m", "default_message": "gone", "args": []}]}, "result": {"a": 1}, "start_time": "2024-01-01T00:00:00.000Z", "end_time": "2024-01-01T00:00:01Z"}).encode())
put("vapi", "update_spec_tagged", b"\x00" + json.dumps({"STRUCTURE": {"com.vmware.vcenter.extension.tasks.update_spec": {"status": "FAILED", "error": {"OPTIONAL": {"ERROR": {"com.vmware.vapi.std.errors.not_found": {"messages": [], "data": {"OPTIONAL": None}}}}}}}}).encode())
put("vapi", "values", b"\x01" + json.dumps({"tasks": ["t1"], "services": ["com.vmware.vcenter.vm"], "targets": [{"type": "Folder", "id": "group-d1"}], "nested": {"SECRET": "s", "x": [1, 2.5, True, None]}}).encode())
put("vapi", "jsonrpc_session_get", b"\x02" + json.dumps({"jsonrpc": "2.0", "id": "1", "method": "invoke", "params": {"serviceId": "com.vmware.cis.session", "operationId": "get", "input": {"STRUCTURE": {"operation-input": {}}}, "ctx": {"appCtx": {}, "securityCtx": {"schemeId": "com.vmware.vapi.std.security.session_id", "sessionId": {"SECRET": "@SESSION@"}}}}}).encode())
put("vapi", "jsonrpc_task_update", b"\x02" + json.dumps({"jsonrpc": "2.0", "id": "2", "method": "invoke", "params": {"serviceId": "com.vmware.vcenter.extension.tasks", "operationId": "update", "input": {"STRUCTURE": {"operation-input": {"task_id": "@VTASK@", "spec": {"STRUCTURE": {"com.vmware.vcenter.extension.tasks.update_spec": {"status": "RUNNING", "percent_done": {"OPTIONAL": {"STRUCTURE": {"x": {"total": 10, "completed": 1}}}}}}}}}}, "ctx": {"securityCtx": {"schemeId": "com.vmware.vapi.std.security.session_id", "sessionId": {"SECRET": "@SESSION@"}}}}}).encode())
put("vapi", "jsonrpc_tasks_list", b"\x02" + json.dumps({"jsonrpc": "2.0", "id": 3, "method": "invoke", "params": {"serviceId": "com.vmware.cis.tasks", "operationId": "list", "input": {"STRUCTURE": {"operation-input": {"filter_spec": {"OPTIONAL": {"STRUCTURE": {"f": {"services": ["com.vmware.vcenter.extension"]}}}}}}}, "ctx": {"securityCtx": {"schemeId": "com.vmware.vapi.std.security.session_id", "sessionId": {"SECRET": "@SESSION@"}}}}}).encode())
put("vapi", "rest_create", bytes([3 | 0x10]) + b"vcenter/extension/tasks\n" + json.dumps({"spec": {"operation_id": "com.example.sec.run", "cancelable": True, "target": {"type": "Folder", "id": "group-d1"}}}).encode())
put("vapi", "rest_patch", bytes([3 | 0x20]) + b"vcenter/extension/tasks/@VTASK@\n" + json.dumps({"spec": {"status": "RUNNING", "percent_done": {"total": 100, "completed": 5}}}).encode())
put("vapi", "rest_get", bytes([3]) + b"cis/tasks/@VTASK@?exclude_result=true\n")
put("vapi", "rest_list", bytes([3 | 0x40]) + b"cis/tasks?filter_spec.services=com.vmware.vcenter.extension&filter_spec.status=RUNNING\n")

# --- vcd_xml: XML documents (tests/python/test_vcd.py)
NS = 'xmlns="http://www.vmware.com/vcloud/v1.5"'
put("vcd_xml", "task_create", f'<Task {NS} name="ext" status="queued" operationName="jobExt" serviceNamespace="com.example.ext"><Description>external</Description><Progress>0</Progress></Task>')
put("vcd_xml", "task_params", f'<Task {NS} name="t3" status="queued" serviceNamespace="com.example.r"><Params><Params><x a="1">y</x></Params></Params><Details>d</Details></Task>')
put("vcd_xml", "task_update", f'<Task {NS} status="success"/>')
put("vcd_xml", "task_error", f'<Task {NS} status="error"><Error majorErrorCode="500" minorErrorCode="INTERNAL_SERVER_ERROR" message="boom" stackTrace="x"/><Result><![CDATA[r]]><b>1</b></Result><Owner href="https://h/api/vApp/vapp-1" type="application/vnd.vmware.vcloud.vApp+xml" name="v"/><Progress>100</Progress></Task>')
put("vcd_xml", "org_list", '<?xml version="1.0" encoding="UTF-8"?><OrgList xmlns="http://www.vmware.com/vcloud/v1.5" href="https://h/api/org/" type="application/vnd.vmware.vcloud.orgList+xml"><Org href="https://h/api/org/1" type="application/vnd.vmware.vcloud.org+xml" name="acme"/></OrgList>')

# --- vcd_json: selector (bit 0: PUT existing / POST new; bit 1: XML answer) + JSON
put("vcd_json", "put_running", b"\x00" + json.dumps({"status": "RUNNING", "progress": 40}).encode())
put("vcd_json", "put_progress_bad", b"\x00" + json.dumps({"progress": 140}).encode())
put("vcd_json", "post_new", b"\x01" + json.dumps({"name": "ext", "status": "queued", "operationName": "jobExt", "serviceNamespace": "com.example.ext", "description": "external", "progress": 0, "params": "<a/>", "owner": {"href": "https://h/api/vApp/vapp-1", "type": "application/vnd.vmware.vcloud.vApp+xml", "name": "v", "id": "urn:vcloud:vapp:1"}}).encode())
put("vcd_json", "post_error_xml", b"\x03" + json.dumps({"name": "e", "status": "error", "serviceNamespace": "com.example.ext", "error": {"majorErrorCode": 500, "minorErrorCode": "INTERNAL_SERVER_ERROR", "message": "boom", "vendorSpecificErrorCode": "v", "stackTrace": "s"}, "result": "r"}).encode())
put("vcd_json", "put_success", b"\x02" + json.dumps({"status": "success", "details": "done"}).encode())

# --- nbd: selector (prefix variant, see nbd.rs) + client stream
REQ = 0x25609513


def req(cmd, off, length, handle=1, flags=0, data=b""):
    return struct.pack(">IHHQQI", REQ, flags, cmd, handle, off, length) + data


DISC = req(2, 0, 0, 99)
put("nbd", "go_read_status", b"\x01" + req(0, 0, 4096, 1) + req(7, 0, 4 << 20, 2) + req(7, 0, 65536, 3, flags=8) + DISC)
put("nbd", "go_write_trim_zero", b"\x01" + req(1, 4096, 512, 1, flags=1, data=b"\x11" * 512) + req(4, 65536, 65536, 2) + req(6, 131072, 4096, 3) + req(3, 0, 0, 4) + req(0, 4096, 512, 5) + DISC)
put("nbd", "ro_simple", b"\x02" + req(0, 0, 512, 1) + req(1, 0, 512, 2, data=b"\x00" * 512) + req(0, 4 << 20, 512, 3) + DISC)
put("nbd", "export_name", b"\x03" + req(0, 1 << 20, 4096, 1) + DISC)
put("nbd", "snapshot", b"\x04" + req(0, 0, 65536, 1) + req(7, 0, 4 << 20, 2) + DISC)


def opt(o, data=b""):
    return struct.pack(">QII", 0x49484156454f5054, o, len(data)) + data


put("nbd", "haggle_list_info", b"\x05" + opt(3) + opt(6, struct.pack(">I", 4) + b"nope" + struct.pack(">HH", 1, 0)) + opt(9, struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", 5) + b"base:") + opt(8) + opt(42) + opt(2))
put("nbd", "raw_flags_only", b"\x00" + struct.pack(">I", 3) + opt(7, struct.pack(">I", 3) + b"bad" + struct.pack(">H", 0)))

# --- vmdk: selector (% 3: 0 descriptor, 1 KDMV extent, 2 chain top) + bytes
FLAT_DESC = '''# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=1a2b3c4d
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 FLAT "top-flat.vmdk" 0

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "1"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.virtualHWVersion = "14"
ddb.uuid = "60 00 C2 9b 00 00 00 00-00 00 00 00 00 00 00 02"
ddb.longContentID = "0123456789abcdef0123456789abcdef"
ddb.thinProvisioned = "1"
'''
DELTA_DESC = '''# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=5e6f7a8b
parentCID=ffffffff
createType="monolithicSparse"
parentFileNameHint="parent.vmdk"

# Extent description
RW 2048 SPARSE "top-s001.vmdk"

# The Disk Data Base
#DDB

ddb.longContentID = "fedcba9876543210fedcba9876543210"
'''
ESXI_DESC = '''# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
isNativeSnapshot="no"
createType="vmfs"

# Extent description
RW 2048 VMFS "top-flat.vmdk"

ddb.deletable = "true"
ddb.adapterType = "lsilogic"
'''
put("vmdk", "desc_flat", b"\x00" + FLAT_DESC.encode())
put("vmdk", "desc_delta", b"\x00" + DELTA_DESC.encode())
put("vmdk", "desc_esxi", b"\x00" + ESXI_DESC.encode())
put("vmdk", "chain_flat", b"\x02" + FLAT_DESC.encode())
put("vmdk", "chain_sparse_no_parent", b"\x02" + DELTA_DESC.replace('parentFileNameHint="parent.vmdk"\n', "").encode())
put("vmdk", "chain_sparse_parent", b"\x02" + DELTA_DESC.encode())


def kdmv(capacity, rgd, gd, gts, rgts, entries, total_sectors, flags=3):
    """A KDMV file as sparse.rs writes one: header, redundant and primary
    directories and tables at the given sectors; entries: {grain: sector}."""
    h = bytearray(512)
    h[0:4] = b"KDMV"
    struct.pack_into("<IIQQQQIQQQ", h, 4, 1, flags, capacity, 128, 1, 20, 512, rgd, gd, 128)
    h[72] = 0
    h[73:77] = b"\n \r\n"
    f = bytearray(total_sectors * 512)
    f[0:512] = h
    for i, gt in enumerate(gts):
        struct.pack_into("<I", f, gd * 512 + 4 * i, gt)
    for i, gt in enumerate(rgts):
        struct.pack_into("<I", f, rgd * 512 + 4 * i, gt)
    for g, sector in entries.items():
        for t in gts + rgts:
            struct.pack_into("<I", f, t * 512 + 4 * g, sector)
        f[sector * 512:sector * 512 + 4096] = b"\x09" * 4096
    return bytes(f)


# The layout of SparseExtent::create for 2,048 sectors (rgd 21, rgt 22, gd 26,
# gt 27), truncated after the tables; and a compact one with a grain's start.
put("vmdk", "kdmv_create_layout", b"\x01" + kdmv(2048, 21, 26, [27], [22], {}, 31))
put("vmdk", "kdmv_compact_grain", b"\x01" + kdmv(2048, 1, 2, [3], [], {1: 7}, 15, flags=1))
