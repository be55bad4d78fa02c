"""ONVIF device management service (ver10 device WSDL) of the simulated camera."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from agent.errors import InvalidArgument
from agent.sim.camera import firmware
from agent.sim.camera.model import (
    MAX_USERS,
    FixedUser,
    NetworkProtocol,
    PortInUse,
    ServiceNotSupported,
    TooManyUsers,
    UnknownUser,
    User,
    UserLevel,
    UsernameClash,
)
from agent.sim.camera.soap import (
    SERVICES,
    Access,
    Context,
    Service,
    SoapFault,
    as_bool,
    as_int,
    child,
    children,
    duration,
    el,
    map_error,
    require,
    text,
    tx,
)

DEVICE = Service("device", "tds", "/onvif/device_service", (2, 60))
operation = DEVICE.operation

#: Seconds the camera stays down after SystemReboot.
REBOOT_DOWNTIME = 1.0
#: ONVIF version the camera claims (SupportedVersions).
ONVIF_VERSION = (2, 60)
_CATEGORIES = ("All", "Device", "Imaging", "Media", "PTZ")
#: The service behind each GetCapabilities category.
_KEYS = {"Device": "device", "Imaging": "imaging", "Media": "media", "PTZ": "ptz"}

map_error(UnknownUser, "ter:InvalidArgVal", "ter:UsernameMissing")
map_error(UsernameClash, "ter:OperationProhibited", "ter:UsernameClash")
map_error(FixedUser, "ter:InvalidArgVal", "ter:FixedUser")
map_error(TooManyUsers, "ter:Action", "ter:TooManyUsers")
map_error(ServiceNotSupported, "ter:InvalidArgVal", "ter:ServiceNotSupported")
map_error(PortInUse, "ter:InvalidArgVal", "ter:PortAlreadyInUse")


def _device_caps(ctx: Context) -> str:
    net: dict[str, object] = {
        "IPFilter": False,
        "ZeroConfiguration": False,
        "IPVersion6": False,
        "DynDNS": False,
    }
    net |= {"Dot11Configuration": False, "HostnameFromDHCP": False, "NTP": 0}
    sec: dict[str, object] = {
        "TLS1.0": False,
        "TLS1.1": False,
        "TLS1.2": False,
        "OnboardKeyGeneration": False,
    }
    sec |= {"AccessPolicyConfig": False, "DefaultAccessPolicy": True, "Dot1X": False}
    sec |= {"RemoteUserHandling": False, "X.509Token": False, "SAMLToken": False}
    sec |= {"KerberosToken": False, "UsernameToken": True, "HttpDigest": False}
    sec |= {"RELToken": False, "MaxUsers": MAX_USERS}
    system: dict[str, object] = {
        "DiscoveryResolve": False,
        "DiscoveryBye": True,
        "RemoteDiscovery": False,
    }
    system |= {"SystemBackup": False, "SystemLogging": False, "FirmwareUpgrade": True}
    # A camera switched to lack StartFirmwareUpgrade says so (UpgradeSystemFirmware only).
    http_upgrade = "StartFirmwareUpgrade" not in ctx.model.faults.soap_faults
    system |= {"HttpFirmwareUpgrade": http_upgrade, "HttpSystemBackup": False}
    system |= {"HttpSystemLogging": False, "HttpSupportInformation": False}
    return el(
        "tds:Capabilities",
        el("tds:Network", attrs=net),
        el("tds:Security", attrs=sec),
        el("tds:System", attrs=system),
    )


DEVICE.capabilities = _device_caps


@operation("GetServiceCapabilities", access=Access.PRE_AUTH)
def get_service_capabilities(ctx: Context, req: Element) -> str:
    return el("tds:GetServiceCapabilitiesResponse", _device_caps(ctx))


@operation("GetServices", access=Access.PRE_AUTH)
def get_services(ctx: Context, req: Element) -> str:
    include = as_bool(text(req, "IncludeCapability") or "false", "IncludeCapability")
    items = []
    for svc in SERVICES.values():
        if not ctx.model.faults.offers(svc.key):
            continue
        caps = el("tds:Capabilities", svc.capabilities(ctx)) if include and svc.capabilities else ""
        version = el("tds:Version", tx("tt:Major", svc.version[0]), tx("tt:Minor", svc.version[1]))
        items.append(
            el(
                "tds:Service",
                tx("tds:Namespace", svc.namespace),
                tx("tds:XAddr", ctx.xaddr(svc.key)),
                caps,
                version,
            )
        )
    return el("tds:GetServicesResponse", *items)


def _capability(ctx: Context, category: str) -> str:
    if category == "Device":
        major, minor = ONVIF_VERSION
        flags: tuple[str, ...] = ("IPFilter", "ZeroConfiguration", "IPVersion6", "DynDNS")
        security: tuple[str, ...] = (
            "TLS1.1",
            "TLS1.2",
            "OnboardKeyGeneration",
            "AccessPolicyConfig",
        )
        security += ("X.509Token", "SAMLToken", "KerberosToken", "RELToken")
        system = [
            tx("tt:DiscoveryResolve", False),
            tx("tt:DiscoveryBye", True),
            tx("tt:RemoteDiscovery", False),
            tx("tt:SystemBackup", False),
            tx("tt:SystemLogging", False),
            tx("tt:FirmwareUpgrade", True),
            el("tt:SupportedVersions", tx("tt:Major", major), tx("tt:Minor", minor)),
        ]
        return el(
            "tt:Device",
            tx("tt:XAddr", ctx.xaddr("device")),
            el("tt:Network", *(tx(f"tt:{f}", False) for f in flags)),
            el("tt:System", *system),
            el("tt:IO", tx("tt:InputConnectors", 0), tx("tt:RelayOutputs", 0)),
            el("tt:Security", *(tx(f"tt:{f}", False) for f in security)),
        )
    if category == "Media":
        streaming = el(
            "tt:StreamingCapabilities",
            tx("tt:RTPMulticast", False),
            tx("tt:RTP_TCP", True),
            tx("tt:RTP_RTSP_TCP", True),
        )
        count = len(ctx.model.media_profiles(media2=False))
        profiles = el("tt:ProfileCapabilities", tx("tt:MaximumNumberOfProfiles", count))
        return el(
            "tt:Media", tx("tt:XAddr", ctx.xaddr("media")), streaming, el("tt:Extension", profiles)
        )
    key = {"PTZ": "ptz", "Imaging": "imaging"}[category]
    return el(f"tt:{category}", tx("tt:XAddr", ctx.xaddr(key)))


@operation("GetCapabilities", access=Access.PRE_AUTH)
def get_capabilities(ctx: Context, req: Element) -> str:
    asked = {(c.text or "").strip() for c in children(req, "Category")} or {"All"}
    offered = {c for c in _CATEGORIES if c == "All" or ctx.model.faults.offers(_KEYS[c])}
    for category in asked:
        if category not in offered:
            raise SoapFault(
                ("ter:ActionNotSupported", "ter:NoSuchService"), f"no {category} capabilities"
            )
    wanted = [
        c for c in ("Device", "Imaging", "Media", "PTZ") if c in offered and asked & {c, "All"}
    ]
    # A camera with a speaker counts its audio output under Extension/DeviceIO, as
    # tests/fixtures/onvif/hikvision-ds-2df7276-ael/GetCapabilities.xml does. The simulator has
    # no DeviceIO service: GetAudioOutputs is answered by the media service, named here.
    extension = None
    if ctx.model.speaker is not None and "All" in asked and ctx.model.faults.offers("media"):
        audio = any(p.audio for p in ctx.model.profiles.values())
        extension = el(
            "tt:Extension",
            el(
                "tt:DeviceIO",
                tx("tt:XAddr", ctx.xaddr("media")),
                tx("tt:VideoSources", 1),
                tx("tt:VideoOutputs", 0),
                tx("tt:AudioSources", 1 if audio else 0),
                tx("tt:AudioOutputs", 1),
                tx("tt:RelayOutputs", 0),
            ),
        )
    return el(
        "tds:GetCapabilitiesResponse",
        el("tds:Capabilities", *(_capability(ctx, c) for c in wanted), extension),
    )


@operation("GetDeviceInformation", access=Access.READ)
def get_device_information(ctx: Context, req: Element) -> str:
    ident = ctx.model.identity
    fields = [
        ("Manufacturer", ident.manufacturer),
        ("Model", ident.model),
        ("FirmwareVersion", ident.firmware_version),
        ("SerialNumber", ident.serial_number),
        ("HardwareId", ident.hardware_id),
    ]
    if ctx.model.faults.nonconforming_xml:  # wrong namespace and order, as some firmwares
        return el("tds:GetDeviceInformationResponse", *(tx(f"tt:{k}", v) for k, v in fields[::-1]))
    return el("tds:GetDeviceInformationResponse", *(tx(f"tds:{k}", v) for k, v in fields))


def _date_time(tag: str, stamp: datetime) -> str:
    return el(
        tag,
        el(
            "tt:Time",
            tx("tt:Hour", stamp.hour),
            tx("tt:Minute", stamp.minute),
            tx("tt:Second", stamp.second),
        ),
        el(
            "tt:Date",
            tx("tt:Year", stamp.year),
            tx("tt:Month", stamp.month),
            tx("tt:Day", stamp.day),
        ),
    )


@operation("GetSystemDateAndTime", access=Access.PRE_AUTH)
def get_system_date_and_time(ctx: Context, req: Element) -> str:
    stamp = datetime.fromtimestamp(ctx.model.now(), UTC)
    return el(
        "tds:GetSystemDateAndTimeResponse",
        el(
            "tds:SystemDateAndTime",
            tx("tt:DateTimeType", "Manual"),
            tx("tt:DaylightSavings", False),
            el("tt:TimeZone", tx("tt:TZ", "UTC0")),
            _date_time("tt:UTCDateTime", stamp),
            _date_time("tt:LocalDateTime", stamp),
        ),
    )


@operation("GetHostname", access=Access.PRE_AUTH)
def get_hostname(ctx: Context, req: Element) -> str:
    info = el(
        "tds:HostnameInformation", tx("tt:FromDHCP", False), tx("tt:Name", ctx.model.hostname)
    )
    return el("tds:GetHostnameResponse", info)


@operation("GetWsdlUrl", access=Access.PRE_AUTH)
def get_wsdl_url(ctx: Context, req: Element) -> str:
    url = "http://www.onvif.org/Documents/Specifications.aspx"
    return el("tds:GetWsdlUrlResponse", tx("tds:WsdlUrl", url))


@operation("GetEndpointReference", access=Access.PRE_AUTH)
def get_endpoint_reference(ctx: Context, req: Element) -> str:
    return el("tds:GetEndpointReferenceResponse", tx("tds:GUID", ctx.model.endpoint_reference))


@operation("GetScopes", access=Access.READ)
def get_scopes(ctx: Context, req: Element) -> str:
    scopes = (
        el(
            "tds:Scopes",
            tx("tt:ScopeDef", "Fixed" if fixed else "Configurable"),
            tx("tt:ScopeItem", uri),
        )
        for uri, fixed in ctx.model.scopes()
    )
    return el("tds:GetScopesResponse", *scopes)


@operation("GetNetworkInterfaces", access=Access.READ)
def get_network_interfaces(ctx: Context, req: Element) -> str:
    nic = ctx.model.interface
    ipv4 = nic.ipv4
    if ipv4 == "0.0.0.0" and ctx.host.count(".") == 3:
        ipv4 = ctx.host
    link = el(
        "tt:Link",
        *(
            el(
                f"tt:{s}",
                tx("tt:AutoNegotiation", True),
                tx("tt:Speed", 100),
                tx("tt:Duplex", "Full"),
            )
            for s in ("AdminSettings", "OperSettings")
        ),
        tx("tt:InterfaceType", 6),
    )
    manual = el("tt:Manual", tx("tt:Address", ipv4), tx("tt:PrefixLength", nic.prefix_length))
    iface = el(
        "tds:NetworkInterfaces",
        tx("tt:Enabled", True),
        el("tt:Info", tx("tt:Name", nic.name), tx("tt:HwAddress", nic.mac), tx("tt:MTU", nic.mtu)),
        link,
        el("tt:IPv4", tx("tt:Enabled", True), el("tt:Config", manual, tx("tt:DHCP", False))),
        attrs={"token": nic.token},
    )
    return el("tds:GetNetworkInterfacesResponse", iface)


@operation("GetNetworkProtocols", access=Access.READ)
def get_network_protocols(ctx: Context, req: Element) -> str:
    items = (
        el(
            "tds:NetworkProtocols",
            tx("tt:Name", p.name),
            tx("tt:Enabled", p.enabled),
            *(tx("tt:Port", port) for port in p.ports),
        )
        for p in ctx.model.protocols
    )
    return el("tds:GetNetworkProtocolsResponse", *items)


@operation("SetNetworkProtocols", access=Access.ADMIN)
def set_network_protocols(ctx: Context, req: Element) -> str:
    protocols = []
    for item in children(req, "NetworkProtocols")[:8]:
        ports = tuple(as_int(p.text, "Port") for p in children(item, "Port")[:4])
        name = require(item, "Name")
        protocols.append(NetworkProtocol(name, as_bool(require(item, "Enabled"), "Enabled"), ports))
    if not protocols:
        raise InvalidArgument("no NetworkProtocols given")
    ctx.model.set_protocols(protocols)
    ctx.hooks.protocols_changed()
    return el("tds:SetNetworkProtocolsResponse")


def _level(value: str) -> UserLevel:
    if value == "Anonymous":
        raise SoapFault(
            ("ter:OperationProhibited", "ter:AnonymousNotAllowed"), "no anonymous users"
        )
    try:
        return UserLevel(value)
    except ValueError:
        raise InvalidArgument(f"unsupported UserLevel {value!r}") from None


def _users(req: Element) -> list[tuple[str, str | None, UserLevel]]:
    entries = children(req, "User")
    if not entries:
        raise InvalidArgument("no User given")
    if len(entries) > MAX_USERS:
        raise TooManyUsers(f"at most {MAX_USERS} users")
    return [
        (require(u, "Username"), text(u, "Password"), _level(require(u, "UserLevel")))
        for u in entries
    ]


@operation("GetUsers", access=Access.ADMIN)
def get_users(ctx: Context, req: Element) -> str:
    users = (
        el("tds:User", tx("tt:Username", u.username), tx("tt:UserLevel", u.level.value))
        for u in ctx.model.users.values()
    )
    return el("tds:GetUsersResponse", *users)


@operation("CreateUsers", access=Access.ADMIN)
def create_users(ctx: Context, req: Element) -> str:
    users = []
    for name, password, level in _users(req):
        if not password:
            raise InvalidArgument(f"user {name!r} needs a password")
        users.append(User(name, password, level))
    ctx.model.create_users(users)
    return el("tds:CreateUsersResponse")


@operation("SetUser", access=Access.ADMIN)
def set_user(ctx: Context, req: Element) -> str:
    ctx.model.set_users(_users(req))
    return el("tds:SetUserResponse")


@operation("DeleteUsers", access=Access.ADMIN)
def delete_users(ctx: Context, req: Element) -> str:
    names = [(c.text or "").strip() for c in children(req, "Username")[: MAX_USERS + 1]]
    if not names:
        raise InvalidArgument("no Username given")
    ctx.model.delete_users(names)
    return el("tds:DeleteUsersResponse")


@operation("SystemReboot", access=Access.ADMIN)
def system_reboot(ctx: Context, req: Element) -> str:
    ctx.hooks.schedule_reboot(REBOOT_DOWNTIME)
    return el("tds:SystemRebootResponse", tx("tds:Message", "Rebooting"))


@operation("StartFirmwareUpgrade", access=Access.ADMIN)
def start_firmware_upgrade(ctx: Context, req: Element) -> str:
    upload_id = ctx.firmware.start(ctx.now)
    return el(
        "tds:StartFirmwareUpgradeResponse",
        tx("tds:UploadUri", f"{ctx.base_url}{firmware.UPLOAD_PATH}/{upload_id}"),
        tx("tds:UploadDelay", duration(firmware.UPLOAD_DELAY)),
        tx("tds:ExpectedDownTime", duration(firmware.EXPECTED_DOWNTIME)),
    )


@operation("UpgradeSystemFirmware", access=Access.ADMIN)
def upgrade_system_firmware(ctx: Context, req: Element) -> str:
    """The image comes as the request's MTOM attachment; `FirmwareUploads.handle_mtom` checks
    and installs it after this answer is made and before it is sent."""
    include = child(req, "Firmware", "Include")
    href = "" if include is None else include.attrib.get("href", "")
    if not href:
        raise InvalidArgument("Firmware has no xop:Include")
    firmware.claim_attachment(href)
    return el("tds:UpgradeSystemFirmwareResponse", tx("tds:Message", "Upgrading, then rebooting"))
