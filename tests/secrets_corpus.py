"""A corpus of secrets pasted the way operators paste them, with fresh random values per run.

`generate(seed)` returns `Paste`s: a kind, the text an operator would paste (a log line, a
command, a config file, a traceback…), the secret values in it, and fragments of context that
must survive redaction. The values are random per seed, so a test cannot pass by knowing them;
tests print the seed when they fail (`QWB_SECRETS_SEED=<n>` replays a run).

`NEAR_MISSES` is text that looks a bit like a secret but is not one: it must be stored unchanged.
"""

# ruff: noqa: E501  (pastes are real-looking lines; they stay whole)
from __future__ import annotations

import base64
import json
import os
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paste:
    kind: str
    text: str
    secrets: list[str]
    keep: list[str] = field(default_factory=list)


def seed_from_env() -> int:
    """QWB_SECRETS_SEED when set (to replay a failure), else a fresh random seed."""
    raw = os.environ.get("QWB_SECRETS_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1, 2**31)


class _Values:
    """Random secret values of the shapes real systems issue."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def alnum(self, n: int) -> str:
        return self.chars(string.ascii_letters + string.digits, n)

    def upper_digits(self, n: int) -> str:
        return self.chars(string.ascii_uppercase + string.digits, n)

    def hex(self, n: int) -> str:
        return self.chars("0123456789abcdef", n)

    def password(self, n: int | None = None, symbols: str = "!%^*_+-.~#") -> str:
        """Mixed case, digits and shell-safe symbols; never a dictionary word."""
        n = n or self.rng.randint(12, 20)
        body = [
            self.rng.choice(string.ascii_uppercase),
            self.rng.choice(string.ascii_lowercase),
            self.rng.choice(string.digits),
            self.rng.choice(symbols) if symbols else self.rng.choice(string.digits),
        ]
        body += [
            self.rng.choice(string.ascii_letters + string.digits + symbols) for _ in range(n - 4)
        ]
        self.rng.shuffle(body)
        return self.rng.choice(string.ascii_letters) + "".join(body)

    def url_password(self) -> str:
        return self.password(symbols="-._~")

    def b64(self, nbytes: int) -> str:
        return base64.b64encode(self.rng.randbytes(nbytes)).decode()

    def b64url(self, nbytes: int) -> str:
        return base64.urlsafe_b64encode(self.rng.randbytes(nbytes)).decode().rstrip("=")

    def jwt(self) -> str:
        header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').decode().rstrip("=")
        payload = json.dumps(
            {"sub": self.alnum(12), "iat": self.rng.randint(1_600_000_000, 1_800_000_000)}
        )
        body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{header}.{body}.{self.b64url(64)}"

    def pem_body(self, lines: int = 6) -> list[str]:
        return [self.b64(48) for _ in range(lines)]

    def pem(self, label: str = "RSA PRIVATE KEY", lines: int = 6) -> tuple[str, list[str]]:
        body = self.pem_body(lines)
        text = f"-----BEGIN {label}-----\n" + "\n".join(body) + f"\n-----END {label}-----"
        return text, body

    def uuid(self) -> str:
        h = self.hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _kinds(v: _Values) -> list[Callable[[], Paste]]:  # noqa: C901 - one builder per kind
    out: list[Callable[[], Paste]] = []

    def kind(fn: Callable[[], Paste]) -> Callable[[], Paste]:
        out.append(fn)
        return fn

    # ------------------------------------------------------------------ Kubernetes / OpenShift
    @kind
    def kubeconfig() -> Paste:
        key_pem, _ = v.pem("RSA PRIVATE KEY")
        key_data = base64.b64encode(key_pem.encode()).decode()
        cert_data = v.b64(600)
        token = v.jwt()
        ca = base64.b64encode(
            b"-----BEGIN CERTIFICATE-----\nMIIC5zCCAc+gAwIBAgIBATANBgkqhkiG9w0BAQsFADAVMRMwEQYDVQQDEwptaW5p\n-----END CERTIFICATE-----\n"
        ).decode()
        text = (
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: " + ca + "\n"
            "    server: https://api.ocp4.lab.example.com:6443\n  name: ocp4\ncontexts:\n"
            "- context:\n    cluster: ocp4\n    user: admin\n  name: admin\ncurrent-context: admin\n"
            "kind: Config\npreferences: {}\nusers:\n- name: admin\n  user:\n"
            f"    client-certificate-data: {cert_data}\n    client-key-data: {key_data}\n"
            f"- name: sa-deployer\n  user:\n    token: {token}\n"
        )
        return Paste(
            "kubeconfig",
            text,
            [key_data[:60], key_data[-40:], cert_data[:60], token],
            ["server: https://api.ocp4.lab.example.com:6443", "current-context: admin", ca],
        )

    @kind
    def oc_login_password() -> Paste:
        pw = v.password()
        text = f"[root@bastion ~]# oc login -u kubeadmin -p {pw} https://api.ocp4.lab.example.com:6443 --insecure-skip-tls-verify\nLogin successful."
        return Paste("oc login -p", text, [pw], ["oc login -u kubeadmin -p ", "Login successful."])

    @kind
    def oc_login_token() -> Paste:
        tok = "sha256~" + v.b64url(32)
        return Paste(
            "oc login --token",
            f"oc login --token={tok} --server=https://api.ocp4.lab:6443",
            [tok],
            ["--server=https://api.ocp4.lab:6443"],
        )

    @kind
    def k8s_secret_yaml() -> Paste:
        user, pw, extra = v.b64(9), v.b64(18), v.b64(30)
        text = (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: airflow-db\n  namespace: airflow\n"
            f"type: Opaque\ndata:\n  username: {user}\n  password: {pw}\n  connection: {extra}\n"
            '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: airflow-config\ndata:\n  AIRFLOW__CORE__LOAD_EXAMPLES: "False"\n'
        )
        return Paste(
            "kubernetes Secret data",
            text,
            [user, pw, extra],
            ["kind: Secret", "name: airflow-db", 'AIRFLOW__CORE__LOAD_EXAMPLES: "False"'],
        )

    @kind
    def k8s_secret_stringdata() -> Paste:
        tok, pw = v.alnum(32), v.password()
        text = (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-creds\nstringData:\n"
            f"  VAULT_ROLE_ID: {v.uuid()}\n  bind-credential: {pw}\n  apikey: {tok}\n"
        )
        return Paste("kubernetes Secret stringData", text, [tok, pw], ["name: vault-creds"])

    @kind
    def k8s_secret_json() -> Paste:
        pw, dockercfg = v.b64(18), v.b64(120)
        text = json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "pull"},
                "data": {".dockerconfigjson": dockercfg, "db-pass": pw},
                "type": "kubernetes.io/dockerconfigjson",
            },
            indent=2,
        )
        return Paste("kubectl get secret -o json", text, [pw, dockercfg], ['"name": "pull"'])

    @kind
    def kubectl_from_literal() -> Paste:
        pw, tok = v.password(), v.alnum(24)
        text = f"kubectl -n airflow create secret generic airflow-conn --from-literal=conn_uri=postgresql://airflow@db --from-literal=db_admin={pw} --from-literal=slack={tok}"
        return Paste(
            "kubectl --from-literal",
            text,
            [pw, tok],
            ["kubectl -n airflow create secret generic airflow-conn"],
        )

    @kind
    def kubectl_docker_registry() -> Paste:
        pw = v.password()
        text = f"oc create secret docker-registry quay-pull --docker-server=quay.io --docker-username=org+robot --docker-password={pw} -n openshift-config"
        return Paste("oc create secret docker-registry", text, [pw], ["--docker-server=quay.io"])

    @kind
    def install_config() -> Paste:
        auth1 = base64.b64encode(
            f"openshift-release-dev+ocm_access_{v.hex(12)}:{v.upper_digits(64)}".encode()
        ).decode()
        auth2 = base64.b64encode(f"admin:{v.password()}".encode()).decode()
        key_pem, body = v.pem("OPENSSH PRIVATE KEY", 5)
        pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPx2Zk8a3sN6q0bKc1mWQp7yTr5eLh9uJ4dVf2GgHwXo admin@bastion"
        pull = json.dumps(
            {
                "auths": {
                    "cloud.openshift.com": {"auth": auth1, "email": "ops@example.com"},
                    "registry.lab.example.com:8443": {"auth": auth2, "email": "ops@example.com"},
                }
            }
        )
        text = (
            "apiVersion: v1\nbaseDomain: lab.example.com\nmetadata:\n  name: ocp4\n"
            "platform:\n  baremetal:\n    apiVIPs: [192.168.122.10]\n"
            f"pullSecret: '{pull}'\nsshKey: '{pub}'\n"
            f"# bastion key (do not commit!)\n{key_pem}\n"
        )
        return Paste(
            "install-config.yaml",
            text,
            [auth1, auth2, body[0], body[-1]],
            ["baseDomain: lab.example.com", pub, '"email": "ops@example.com"'],
        )

    @kind
    def docker_config_json() -> Paste:
        auth = base64.b64encode(f"robot$ci:{v.alnum(32)}".encode()).decode()
        ident = v.jwt()
        text = json.dumps(
            {"auths": {"quay.io": {"auth": auth}, "registry.redhat.io": {"identitytoken": ident}}},
            indent=4,
        )
        return Paste("~/.docker/config.json", text, [auth, ident], ['"quay.io"'])

    # ------------------------------------------------------------------ container registries
    @kind
    def docker_login_p() -> Paste:
        pw = v.password()
        return Paste(
            "docker login -p",
            f"$ docker login -u admin -p {pw} registry.lab.example.com:5000\nWARNING! Using --password via the CLI is insecure. Use --password-stdin.",
            [pw],
            ["WARNING! Using --password via the CLI is insecure."],
        )

    @kind
    def podman_login_p() -> Paste:
        pw = v.password()
        return Paste(
            "podman login -p",
            f"podman login --tls-verify=false -u init -p {pw} quay-mirror.lab:8443",
            [pw],
            ["podman login --tls-verify=false -u init -p "],
        )

    @kind
    def password_stdin_heredoc() -> Paste:
        pw = v.password()
        text = f"podman login -u admin --password-stdin registry.lab:5000 <<EOF\n{pw}\nEOF\nLogin Succeeded!"
        return Paste(
            "--password-stdin heredoc",
            text,
            [pw],
            ["Login Succeeded!", "--password-stdin registry.lab:5000"],
        )

    @kind
    def password_stdin_echo() -> Paste:
        pw = v.password()
        return Paste(
            "echo | docker login --password-stdin",
            f"echo '{pw}' | docker login quay.io -u myorg+ci --password-stdin",
            [pw],
            ["docker login quay.io -u myorg+ci --password-stdin"],
        )

    @kind
    def skopeo_creds() -> Paste:
        pw = v.password()
        return Paste(
            "skopeo --creds",
            f"skopeo copy --src-creds admin:{pw} docker://registry.lab/ubi9:latest dir:/tmp/ubi9",
            [pw],
            ["skopeo copy --src-creds admin:"],
        )

    # ------------------------------------------------------------------ Ansible
    @kind
    def ansible_inventory() -> Paste:
        p1, p2, p3 = v.password(), v.password(), v.password()
        text = (
            "[kvm_hosts]\nhypervisor01 ansible_host=192.168.1.20 ansible_user=lab-user "
            f"ansible_ssh_pass={p1} ansible_become_pass={p2}\n\n[idm]\n"
            f"idm01.lab.example.com ansible_password='{p3}' ansible_connection=ssh\n"
        )
        return Paste(
            "ansible inventory",
            text,
            [p1, p2, p3],
            [
                "hypervisor01 ansible_host=192.168.1.20 ansible_user=lab-user",
                "ansible_connection=ssh",
            ],
        )

    @kind
    def ansible_extra_vars() -> Paste:
        p1, p2 = v.password(), v.password()
        text = f"ansible-playbook -i inventory setup.yml -e 'admin_password={p1}' -e '{{\"freeipa_dm_password\": \"{p2}\"}}' --vault-id dev@prompt"
        return Paste(
            "ansible -e password",
            text,
            [p1, p2],
            ["ansible-playbook -i inventory setup.yml -e '", "--vault-id dev@prompt"],
        )

    @kind
    def ansible_group_vars() -> Paste:
        p1, p2 = v.password(), v.password()
        text = f'---\n# group_vars/all.yml\nrhsm_username: lab-user\nrhsm_password: {p1}\nfreeipa_server_admin_password: "{p2}"\nansible_become_password: "{{{{ vault_become }}}}"\n'
        return Paste(
            "ansible group_vars",
            text,
            [p1, p2],
            ["rhsm_username: lab-user", 'ansible_become_password: "{{ vault_become }}"'],
        )

    @kind
    def vault_pass_echo() -> Paste:
        pw = v.password()
        return Paste(
            "vault password echoed into a file",
            f"echo '{pw}' > ~/.vault_pass && chmod 600 ~/.vault_pass",
            [pw],
            ["chmod 600 ~/.vault_pass"],
        )

    @kind
    def vault_pass_printf() -> Paste:
        pw = v.password()
        return Paste(
            "vault password printf > file",
            f"printf '%s\\n' {pw} > /root/.ansible/vault-password.txt",
            [pw],
            ["/root/.ansible/vault-password.txt"],
        )

    @kind
    def encrypt_string() -> Paste:
        pw = v.password()
        return Paste(
            "ansible-vault encrypt_string",
            f"ansible-vault encrypt_string --vault-id prod@~/.vault_pass '{pw}' --name 'idm_admin_password'",
            [pw],
            ["--name 'idm_admin_password'"],
        )

    @kind
    def encrypt_string_bare() -> Paste:
        pw = v.password()
        return Paste(
            "ansible-vault encrypt_string bare",
            f"$ ansible-vault encrypt_string {pw} -n vault_rhsm_password",
            [pw],
            ["-n vault_rhsm_password"],
        )

    @kind
    def ansible_vault_env() -> Paste:
        pw = v.password()
        return Paste(
            "ANSIBLE_VAULT_PASSWORD env",
            f"export ANSIBLE_VAULT_PASSWORD={pw}\nansible-playbook site.yml --vault-password-file ./vault-env",
            [pw],
            ["--vault-password-file ./vault-env"],
        )

    # ------------------------------------------------------------------ SSH / hosts
    @kind
    def sshpass() -> Paste:
        pw = v.password()
        return Paste(
            "sshpass -p",
            f"sshpass -p '{pw}' ssh -o StrictHostKeyChecking=no root@192.168.122.45 'systemctl status libvirtd'",
            [pw],
            ["ssh -o StrictHostKeyChecking=no root@192.168.122.45"],
        )

    @kind
    def sshpass_attached() -> Paste:
        pw = v.password(symbols="")
        return Paste(
            "sshpass -pPW",
            f"sshpass -p{pw} scp inventory.yml admin@10.10.0.5:/tmp/",
            [pw],
            ["scp inventory.yml admin@10.10.0.5:/tmp/"],
        )

    @kind
    def openssh_key() -> Paste:
        key, body = v.pem("OPENSSH PRIVATE KEY", 7)
        return Paste(
            "OpenSSH private key",
            f"cat ~/.ssh/id_ed25519\n{key}\n",
            body,
            ["cat ~/.ssh/id_ed25519"],
        )

    @kind
    def ec_key() -> Paste:
        key, body = v.pem("EC PRIVATE KEY", 3)
        return Paste(
            "EC private key",
            f'Load key "/etc/pki/tls/private/idm.key": invalid format\n{key}',
            body,
            ["invalid format"],
        )

    @kind
    def pkcs8_encrypted() -> Paste:
        key, body = v.pem("ENCRYPTED PRIVATE KEY", 8)
        return Paste("PKCS#8 encrypted key", key + "\n", body)

    @kind
    def pgp_key() -> Paste:
        body = v.pem_body(5)
        text = (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n"
            + "\n".join(body)
            + "\n="
            + v.b64(3)
            + "\n-----END PGP PRIVATE KEY BLOCK-----"
        )
        return Paste("PGP private key", text, body)

    @kind
    def putty_key() -> Paste:
        pub = [v.b64(48) for _ in range(2)]
        priv = [v.b64(48) for _ in range(3)]
        mac = v.hex(64)
        text = (
            "PuTTY-User-Key-File-3: ssh-rsa\nEncryption: none\nComment: rsa-key-20240501\nPublic-Lines: 2\n"
            + "\n".join(pub)
            + "\nPrivate-Lines: 3\n"
            + "\n".join(priv)
            + f"\nPrivate-MAC: {mac}\n"
        )
        return Paste("PuTTY private key", text, priv, ["Comment: rsa-key-20240501"])

    @kind
    def pem_in_json() -> Paste:
        key, body = v.pem("PRIVATE KEY", 4)
        key_id = v.hex(40)
        sa = {
            "type": "service_account",
            "project_id": "lab-ocp",
            "private_key_id": key_id,
            "private_key": key + "\n",
            "client_email": "airflow@lab-ocp.iam.gserviceaccount.com",
        }
        return Paste(
            "GCP service account JSON",
            json.dumps(sa, indent=2),
            [key_id] + body,
            ['"client_email": "airflow@lab-ocp.iam.gserviceaccount.com"'],
        )

    @kind
    def netrc() -> Paste:
        pw = v.password()
        return Paste(
            ".netrc",
            f"machine api.github.com\n  login ops-bot\n  password {pw}\n",
            [pw],
            ["machine api.github.com", "login ops-bot"],
        )

    @kind
    def netrc_oneline() -> Paste:
        pw = v.password()
        return Paste(
            ".netrc one line",
            f"machine registry.redhat.io login svc-account password {pw}",
            [pw],
            ["machine registry.redhat.io login svc-account password "],
        )

    # ------------------------------------------------------------------ FreeIPA / Kerberos / LDAP
    @kind
    def ipa_server_install() -> Paste:
        dm, admin = v.password(), v.password()
        text = f"ipa-server-install -U -r LAB.EXAMPLE.COM -n lab.example.com -p {dm} -a {admin} --setup-dns --no-forwarders"
        return Paste(
            "ipa-server-install -p -a",
            text,
            [dm, admin],
            [
                "ipa-server-install -U -r LAB.EXAMPLE.COM -n lab.example.com -p ",
                "--setup-dns --no-forwarders",
            ],
        )

    @kind
    def ipa_install_log() -> Paste:
        dm, admin = v.password(), v.password()
        text = (
            "2024-05-01T10:11:12Z DEBUG Logging to /var/log/ipaserver-install.log\n"
            f"2024-05-01T10:11:12Z DEBUG args=['/usr/sbin/ipa-server-install', '--ds-password', '{dm}', '--admin-password', '{admin}', '--unattended']\n"
            f"2024-05-01T10:11:13Z DEBUG Starting external process\n2024-05-01T10:11:13Z DEBUG args=/usr/sbin/ipa-server-install --ds-password={dm} --admin-password={admin} -U\n"
            "2024-05-01T10:20:40Z INFO The ipa-server-install command was successful\n"
        )
        return Paste(
            "FreeIPA install log",
            text,
            [dm, admin],
            [
                "The ipa-server-install command was successful",
                "Logging to /var/log/ipaserver-install.log",
            ],
        )

    @kind
    def ipa_client_install() -> Paste:
        pw = v.password()
        return Paste(
            "ipa-client-install -w",
            f"ipa-client-install --domain=lab.example.com --principal=admin -w {pw} --mkhomedir -U",
            [pw],
            ["--principal=admin", "--mkhomedir -U"],
        )

    @kind
    def ipa_user_password() -> Paste:
        pw = v.password()
        return Paste(
            "echo | ipa user-add --password",
            f"echo {pw} | ipa user-add svc-airflow --first=Airflow --last=Service --password",
            [pw],
            ["ipa user-add svc-airflow --first=Airflow --last=Service --password"],
        )

    @kind
    def kinit_echo() -> Paste:
        pw = v.password()
        return Paste(
            "echo pw | kinit",
            f"echo '{pw}' | kinit admin@LAB.EXAMPLE.COM && klist",
            [pw],
            ["kinit admin@LAB.EXAMPLE.COM && klist"],
        )

    @kind
    def kinit_herestring() -> Paste:
        pw = v.password()
        return Paste("kinit <<< pw", f'kinit admin <<< "{pw}"', [pw], ["kinit admin <<< "])

    @kind
    def ldapsearch_w() -> Paste:
        pw = v.password()
        return Paste(
            "ldapsearch -w",
            f"ldapsearch -x -H ldaps://idm.lab.example.com -D 'cn=Directory Manager' -w '{pw}' -b 'dc=lab,dc=example,dc=com' uid=admin",
            [pw],
            ["-D 'cn=Directory Manager' -w '", "uid=admin"],
        )

    @kind
    def ldapmodify_w() -> Paste:
        pw = v.password(symbols="")
        return Paste(
            "ldapmodify -w",
            f"ldapmodify -H ldap://idm -D uid=admin,cn=users,cn=accounts,dc=lab -w {pw} -f change.ldif",
            [pw],
            ["-f change.ldif"],
        )

    @kind
    def chpasswd() -> Paste:
        pw = v.password()
        return Paste(
            "echo user:pw | chpasswd",
            f"echo 'cloud-user:{pw}' | sudo chpasswd",
            [pw],
            ["sudo chpasswd"],
        )

    @kind
    def passwd_stdin() -> Paste:
        pw = v.password()
        return Paste(
            "passwd --stdin",
            f'echo "{pw}" | passwd --stdin lab-user',
            [pw],
            ["passwd --stdin lab-user"],
        )

    @kind
    def sudo_s() -> Paste:
        pw = v.password()
        return Paste(
            "echo pw | sudo -S",
            f"echo {pw} | sudo -S dnf install -y ansible-core",
            [pw],
            ["sudo -S dnf install -y ansible-core"],
        )

    # ------------------------------------------------------------------ web servers / http
    @kind
    def htpasswd_file() -> Paste:
        h1 = "$apr1$" + v.alnum(8) + "$" + v.chars(string.ascii_letters + string.digits + "./", 22)
        h2 = "$2y$05$" + v.chars(string.ascii_letters + string.digits + "./", 53)
        h3 = "{SHA}" + v.b64(20)
        text = f"admin:{h1}\ndeveloper:{h2}\nreader:{h3}\n"
        return Paste("htpasswd file", text, [h1, h2, h3], ["admin:", "developer:", "reader:"])

    @kind
    def htpasswd_b() -> Paste:
        pw = v.password()
        return Paste(
            "htpasswd -b",
            f"htpasswd -bBc /etc/origin/master/htpasswd admin {pw}",
            [pw],
            ["/etc/origin/master/htpasswd admin "],
        )

    @kind
    def shadow_line() -> Paste:
        h = "$6$" + v.alnum(16) + "$" + v.chars(string.ascii_letters + string.digits + "./", 86)
        return Paste("/etc/shadow line", f"lab-user:{h}:19800:0:99999:7:::", [h], ["lab-user:"])

    @kind
    def curl_v_dump() -> Paste:
        basic = base64.b64encode(f"admin:{v.password()}".encode()).decode()
        sess = v.alnum(32)
        csrf = v.alnum(40)
        text = (
            "*   Trying 192.168.122.10:8080...\n* Connected to airflow.lab (192.168.122.10) port 8080 (#0)\n"
            "> POST /api/v1/dags/freeipa_deploy/dagRuns HTTP/1.1\n> Host: airflow.lab:8080\n"
            f"> Authorization: Basic {basic}\n> Cookie: session={sess}; _csrf_token={csrf}\n"
            "> Content-Type: application/json\n>\n< HTTP/1.1 401 UNAUTHORIZED\n< Server: gunicorn\n"
            f"< Set-Cookie: session={sess}; HttpOnly; Path=/\n"
        )
        return Paste(
            "curl -v dump",
            text,
            [basic, sess, csrf],
            ["> Host: airflow.lab:8080", "< HTTP/1.1 401 UNAUTHORIZED", "< Server: gunicorn"],
        )

    @kind
    def cookie_inline() -> Paste:
        sess = v.alnum(40)
        return Paste(
            "Cookie header not at line start",
            f"curl -s -H 'Accept: application/json' -H 'Cookie: airflow_session={sess}' http://airflow.lab:8080/api/v1/pools",
            [sess],
            ["-H 'Accept: application/json'", "http://airflow.lab:8080/api/v1/pools"],
        )

    @kind
    def curl_cookie_flag() -> Paste:
        sess = v.alnum(40)
        return Paste(
            "curl -b cookie",
            f"curl -b 'JSESSIONID={sess}' https://satellite.lab/api/hosts",
            [sess],
            ["https://satellite.lab/api/hosts"],
        )

    @kind
    def curl_api_key_header() -> Paste:
        key = v.alnum(40)
        return Paste(
            "curl -H X-Api-Key",
            f'curl -sS -H "X-Api-Key: {key}" https://marquez.lab:5000/api/v1/namespaces',
            [key],
            ["https://marquez.lab:5000/api/v1/namespaces"],
        )

    @kind
    def curl_private_token() -> Paste:
        tok = v.alnum(26)
        return Paste(
            "curl -H PRIVATE-TOKEN",
            f"curl --header 'PRIVATE-TOKEN: {tok}' https://gitlab.lab/api/v4/projects",
            [tok],
            ["https://gitlab.lab/api/v4/projects"],
        )

    @kind
    def curl_bearer() -> Paste:
        tok = v.alnum(48)
        return Paste(
            "curl bearer",
            f"curl -H 'Authorization: Bearer {tok}' https://api.lab/v1/dags",
            [tok],
            ["https://api.lab/v1/dags"],
        )

    @kind
    def curl_user() -> Paste:
        pw = v.password()
        return Paste(
            "curl -u user:pw",
            f"curl -k -u admin:{pw} https://satellite.lab.example.com/api/v2/hosts",
            [pw],
            ["https://satellite.lab.example.com/api/v2/hosts"],
        )

    @kind
    def url_query_token() -> Paste:
        tok = v.alnum(36)
        return Paste(
            "URL query token",
            f"GET https://grafana.lab/d/abc?orgId=1&access_token={tok}&refresh=30s -> 403",
            [tok],
            ["orgId=1", "refresh=30s -> 403"],
        )

    # ------------------------------------------------------------------ databases
    @kind
    def python_traceback_dsn() -> Paste:
        pw = v.url_password()
        text = (
            'Traceback (most recent call last):\n  File "/opt/airflow/dags/etl.py", line 42, in extract\n'
            '    engine = create_engine(DSN)\n  File "/usr/lib64/python3.11/site-packages/sqlalchemy/engine/create.py", line 560, in create_engine\n'
            f'sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "db.lab" (10.0.4.12), port 5432 failed: FATAL:  password authentication failed for user "airflow"\n'
            f"(Background on this error at: https://sqlalche.me/e/20/e3q8) [SQL: None] url=postgresql+psycopg2://airflow:{pw}@db.lab:5432/airflow\n"
        )
        return Paste(
            "Python traceback with a DSN",
            text,
            [pw],
            [
                'password authentication failed for user "airflow"',
                "@db.lab:5432/airflow",
                "Traceback (most recent call last):",
            ],
        )

    @kind
    def mysql_p() -> Paste:
        pw = v.password(symbols="")
        return Paste(
            "mysql -ppw",
            f"mysql -h db01.lab -u root -p{pw} -e 'SHOW DATABASES;'",
            [pw],
            ["mysql -h db01.lab -u root -p", "-e 'SHOW DATABASES;'"],
        )

    @kind
    def mysqldump_password() -> Paste:
        pw = v.password()
        return Paste(
            "mysqldump --password=",
            f"mysqldump --user=backup --password={pw} --all-databases > /backup/all.sql",
            [pw],
            ["> /backup/all.sql"],
        )

    @kind
    def pgpassword() -> Paste:
        pw = v.password()
        return Paste(
            "PGPASSWORD=",
            f"PGPASSWORD={pw} psql -h 10.0.4.12 -U airflow -d airflow -c 'select 1'",
            [pw],
            ["psql -h 10.0.4.12 -U airflow -d airflow"],
        )

    @kind
    def pgpass_file() -> Paste:
        p1, p2 = v.password(symbols="!%^*_+-.~"), v.password(symbols="!%^*_+-.~")
        return Paste(
            ".pgpass",
            f"db.lab.example.com:5432:airflow:airflow:{p1}\n*:5432:*:replicator:{p2}\n",
            [p1, p2],
            ["db.lab.example.com:5432:airflow:airflow:"],
        )

    @kind
    def psql_alter_user() -> Paste:
        pw = v.password()
        return Paste(
            "ALTER USER PASSWORD",
            f"psql -c \"ALTER USER airflow WITH PASSWORD '{pw}';\"",
            [pw],
            ["ALTER USER airflow WITH PASSWORD '"],
        )

    @kind
    def redis_cli() -> Paste:
        pw = v.password()
        return Paste(
            "redis-cli -a",
            f"redis-cli -h redis.lab -p 6379 -a {pw} --no-auth-warning INFO replication",
            [pw],
            ["redis-cli -h redis.lab -p 6379 -a ", "INFO replication"],
        )

    @kind
    def redis_url() -> Paste:
        pw = v.url_password()
        return Paste(
            "redis URL",
            f"AIRFLOW__CELERY__BROKER_URL=redis://:{pw}@redis:6379/0",
            [pw],
            ["AIRFLOW__CELERY__BROKER_URL=redis://:", "@redis:6379/0"],
        )

    @kind
    def mongo_uri() -> Paste:
        pw = v.url_password()
        return Paste(
            "mongodb URI",
            f"pymongo.errors.OperationFailure: Authentication failed., full error: mongodb+srv://ops:{pw}@cluster0.lab.net/?retryWrites=true",
            [pw],
            ["Authentication failed.", "@cluster0.lab.net/?retryWrites=true"],
        )

    @kind
    def jdbc_password_param() -> Paste:
        pw = v.password()
        return Paste(
            "JDBC ?password=",
            f"jdbc:postgresql://db.lab:5432/marquez?user=marquez&password={pw}&ssl=true",
            [pw],
            ["jdbc:postgresql://db.lab:5432/marquez?user=marquez&password=", "&ssl=true"],
        )

    @kind
    def odbc() -> Paste:
        pw = v.password()
        return Paste(
            "ODBC PWD=",
            f"Driver={{ODBC Driver 18 for SQL Server}};Server=sql01;UID=sa;PWD={pw};Encrypt=yes",
            [pw],
            [";Encrypt=yes"],
        )

    # ------------------------------------------------------------------ Airflow
    @kind
    def airflow_fernet() -> Paste:
        fernet = base64.urlsafe_b64encode(v.rng.randbytes(32)).decode()
        return Paste(
            "AIRFLOW__CORE__FERNET_KEY",
            f"export AIRFLOW__CORE__FERNET_KEY={fernet}\nexport AIRFLOW__CORE__LOAD_EXAMPLES=False",
            [fernet],
            ["export AIRFLOW__CORE__LOAD_EXAMPLES=False"],
        )

    @kind
    def airflow_env_file() -> Paste:
        sk, pw, jwt_secret = v.alnum(32), v.url_password(), v.b64(32)
        fernet = base64.urlsafe_b64encode(v.rng.randbytes(32)).decode()
        text = (
            "# airflow.env\nAIRFLOW__CORE__EXECUTOR=LocalExecutor\n"
            f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:{pw}@postgres/airflow\n"
            f"AIRFLOW__WEBSERVER__SECRET_KEY={sk}\nAIRFLOW__CORE__FERNET_KEY: '{fernet}'\n"
            f"AIRFLOW__API_AUTH__JWT_SECRET={jwt_secret}\nAIRFLOW__CORE__FERNET_KEY_CMD=cat /run/secrets/fernet\n"
        )
        return Paste(
            "Airflow env file",
            text,
            [sk, pw, jwt_secret, fernet],
            [
                "AIRFLOW__CORE__EXECUTOR=LocalExecutor",
                "AIRFLOW__CORE__FERNET_KEY_CMD=cat /run/secrets/fernet",
            ],
        )

    @kind
    def airflow_conn_uri() -> Paste:
        pw, tok = v.url_password(), v.alnum(30)
        text = f"export AIRFLOW_CONN_IDM_LDAP='ldaps://admin:{pw}@idm.lab:636'\nairflow connections add slack --conn-type http --conn-password {tok}"
        return Paste(
            "Airflow connection URI",
            text,
            [pw, tok],
            ["airflow connections add slack --conn-type http --conn-password "],
        )

    @kind
    def airflow_conn_json() -> Paste:
        pw, key = v.password(), v.alnum(40)
        conn = {
            "conn_type": "postgres",
            "host": "db.lab",
            "login": "etl",
            "password": pw,
            "extra": {"api_token": key, "sslmode": "require"},
        }
        return Paste(
            "Airflow connection JSON",
            f"AIRFLOW_CONN_ETL_DB='{json.dumps(conn)}'",
            [pw, key],
            ['"sslmode": "require"', '"login": "etl"'],
        )

    @kind
    def airflow_cfg() -> Paste:
        sk, pw = v.alnum(24), v.password()
        text = f"[webserver]\nsecret_key = {sk}\nbase_url = http://airflow.lab:8080\n\n[smtp]\nsmtp_user = airflow@lab\nsmtp_password = {pw}\n"
        return Paste(
            "airflow.cfg",
            text,
            [sk, pw],
            ["base_url = http://airflow.lab:8080", "smtp_user = airflow@lab"],
        )

    # ------------------------------------------------------------------ cloud / SaaS tokens
    @kind
    def aws_credentials_file() -> Paste:
        kid = "AKIA" + v.upper_digits(16)
        sec = v.chars(string.ascii_letters + string.digits + "/+", 40)
        return Paste(
            "~/.aws/credentials",
            f"[default]\naws_access_key_id = {kid}\naws_secret_access_key = {sec}\nregion = us-east-1\n",
            [kid, sec],
            ["region = us-east-1", "[default]"],
        )

    @kind
    def aws_error() -> Paste:
        kid = "ASIA" + v.upper_digits(16)
        return Paste(
            "AWS key id in an error",
            f"botocore.exceptions.ClientError: An error occurred (AccessDenied): User with key {kid} is not authorized to perform s3:PutObject",
            [kid],
            ["is not authorized to perform s3:PutObject"],
        )

    @kind
    def azure_storage() -> Paste:
        key = v.b64(64)
        return Paste(
            "Azure AccountKey",
            f"DefaultEndpointsProtocol=https;AccountName=qubinodelogs;AccountKey={key};EndpointSuffix=core.windows.net",
            [key],
            ["AccountName=qubinodelogs", "EndpointSuffix=core.windows.net"],
        )

    @kind
    def azure_sas() -> Paste:
        sig = v.b64(32)
        return Paste(
            "Azure SAS URL",
            f"azcopy copy ./logs 'https://lab.blob.core.windows.net/logs?sv=2022-11-02&ss=b&srt=co&sp=rwdlac&se=2025-01-01T00:00:00Z&sig={sig}'",
            [sig],
            ["azcopy copy ./logs"],
        )

    @kind
    def azure_client_secret() -> Paste:
        sec = v.alnum(3) + "8Q~" + v.chars(string.ascii_letters + string.digits + "._~-", 34)
        return Paste(
            "Azure client secret",
            f"az login --service-principal -u {v.uuid()} -p {sec} --tenant lab.onmicrosoft.com",
            [sec],
            ["--tenant lab.onmicrosoft.com"],
        )

    @kind
    def gcp_api_key() -> Paste:
        key = "AIza" + v.chars(string.ascii_letters + string.digits + "_-", 35)
        return Paste(
            "GCP API key",
            f"google.api_core.exceptions.PermissionDenied: 403 API key not valid: key={key}",
            [key],
            ["403 API key not valid"],
        )

    @kind
    def gcp_oauth() -> Paste:
        tok = "ya29." + v.b64url(90)
        return Paste(
            "GCP OAuth token",
            f"gcloud auth print-access-token\n{tok}",
            [tok],
            ["gcloud auth print-access-token"],
        )

    @kind
    def github_token() -> Paste:
        tok = "ghp_" + v.alnum(36)
        return Paste(
            "GitHub token in a clone URL",
            f"git clone https://{tok}@github.com/qubinode/dags.git\nfatal: Authentication failed",
            [tok],
            ["@github.com/qubinode/dags.git", "fatal: Authentication failed"],
        )

    @kind
    def github_pat_env() -> Paste:
        tok = "github_pat_" + v.chars(string.ascii_letters + string.digits + "_", 82)
        return Paste("GitHub fine-grained PAT", f"GH_TOKEN={tok} gh pr list", [tok], ["gh pr list"])

    @kind
    def gitlab_token() -> Paste:
        tok = "glpat-" + v.chars(string.ascii_letters + string.digits + "_-", 20)
        return Paste(
            "GitLab token",
            f"remote: HTTP Basic: Access denied for {tok}",
            [tok],
            ["remote: HTTP Basic: Access denied for "],
        )

    @kind
    def gitlab_runner() -> Paste:
        tok = "glrt-" + v.chars(string.ascii_letters + string.digits + "_-", 20)
        return Paste(
            "GitLab runner token",
            f"gitlab-runner register --non-interactive --url https://gitlab.lab --token {tok} --executor shell",
            [tok],
            ["--executor shell"],
        )

    @kind
    def slack_token() -> Paste:
        tok = f"xoxb-{v.rng.randint(10**10, 10**11)}-{v.rng.randint(10**12, 10**13)}-{v.alnum(24)}"
        return Paste(
            "Slack bot token",
            f"slack_sdk.errors.SlackApiError: invalid_auth (token={tok})",
            [tok],
            ["slack_sdk.errors.SlackApiError: invalid_auth"],
        )

    @kind
    def slack_webhook() -> Paste:
        path = f"T{v.upper_digits(8)}/B{v.upper_digits(10)}/{v.alnum(24)}"
        return Paste(
            "Slack webhook",
            f"POST https://hooks.slack.com/services/{path} returned 404",
            [path.split("/")[-1]],
            ["returned 404"],
        )

    @kind
    def openai_key() -> Paste:
        tok = "sk-proj-" + v.chars(string.ascii_letters + string.digits + "_-", 48)
        return Paste(
            "OpenAI key",
            f"openai.AuthenticationError: Error code: 401 - Incorrect API key provided: {tok}",
            [tok],
            ["Incorrect API key provided"],
        )

    @kind
    def anthropic_key() -> Paste:
        tok = "sk-ant-api03-" + v.chars(string.ascii_letters + string.digits + "_-", 93)
        return Paste("Anthropic key", f"export ANTHROPIC_API_KEY={tok}", [tok])

    @kind
    def hf_token() -> Paste:
        tok = "hf_" + v.alnum(34)
        return Paste("Hugging Face token", f"huggingface-cli login --token {tok}", [tok])

    @kind
    def vault_token() -> Paste:
        tok = "hvs." + v.chars(string.ascii_letters + string.digits + "_-", 90)
        return Paste(
            "Vault token",
            f"vault:\n  addr: https://vault.lab:8200\n  token: {tok}\n  mount: secret\n",
            [tok],
            ["addr: https://vault.lab:8200", "mount: secret"],
        )

    @kind
    def vault_login_output() -> Paste:
        tok = "hvs." + v.alnum(24)
        text = f"Key                  Value\n---                  -----\ntoken                {tok}\ntoken_accessor       {v.alnum(24)}\ntoken_duration       768h\n"
        return Paste("vault login table", text, [tok], ["token_duration       768h"])

    @kind
    def vault_approle() -> Paste:
        sid = v.uuid()
        return Paste(
            "Vault AppRole secret_id",
            f"vault write auth/approle/login role_id=0d3f1c7e-airflow secret_id={sid}",
            [sid],
            ["vault write auth/approle/login role_id=0d3f1c7e-airflow"],
        )

    @kind
    def jwt_in_log() -> Paste:
        tok = v.jwt()
        return Paste(
            "JWT in a log",
            f"WARNING airflow.api: 401 for token {tok} (kid=airflow-api)",
            [tok],
            ["(kid=airflow-api)"],
        )

    @kind
    def rh_offline_token() -> Paste:
        tok = v.jwt()
        return Paste(
            "Red Hat offline token",
            f"curl https://sso.redhat.com/auth/realms/redhat-external/protocol/openid-connect/token -d grant_type=refresh_token -d client_id=rhsm-api -d refresh_token={tok}",
            [tok],
            ["-d client_id=rhsm-api"],
        )

    @kind
    def docker_hub_pat() -> Paste:
        tok = "dckr_pat_" + v.chars(string.ascii_letters + string.digits + "_-", 27)
        return Paste("Docker Hub PAT", f"DOCKERHUB_TOKEN={tok}", [tok])

    @kind
    def generic_high_entropy() -> Paste:
        val = v.alnum(40)
        return Paste(
            "generic high-entropy env",
            f"export QUAY_ROBOT_DEPLOY={val}\nexport QUAY_ORG=qubinode",
            [val],
            ["export QUAY_ORG=qubinode"],
        )

    @kind
    def generic_env_file() -> Paste:
        a, b, c = v.password(), v.alnum(32), v.alnum(28)
        text = f"# .env\nPOSTGRES_USER=airflow\nPOSTGRES_PASSWORD={a}\nMINIO_SECRET_KEY={b}\nMARQUEZ_API_KEY={c}\nPOSTGRES_DB=airflow\n"
        return Paste(".env file", text, [a, b, c], ["POSTGRES_USER=airflow", "POSTGRES_DB=airflow"])

    # ------------------------------------------------------------------ BMC / hypervisors / libvirt
    @kind
    def ipmitool() -> Paste:
        pw = v.password()
        return Paste(
            "ipmitool -P",
            f"ipmitool -I lanplus -H 10.10.0.21 -U ADMIN -P {pw} chassis power status\nChassis Power is on",
            [pw],
            [
                "ipmitool -I lanplus -H 10.10.0.21 -U ADMIN -P ",
                "chassis power status",
                "Chassis Power is on",
            ],
        )

    @kind
    def redfish_curl() -> Paste:
        pw = v.password()
        return Paste(
            "Redfish curl",
            f"curl -sku root:{pw} https://10.10.0.22/redfish/v1/Systems/1",
            [pw],
            ["https://10.10.0.22/redfish/v1/Systems/1"],
        )

    @kind
    def virsh_secret() -> Paste:
        val = "AQ" + v.chars(string.ascii_letters + string.digits + "+/", 38) + "=="
        text = f"virsh secret-define --file secret.xml\nvirsh secret-set-value --secret {v.uuid()} --base64 {val}"
        return Paste(
            "virsh secret-set-value", text, [val], ["virsh secret-define --file secret.xml"]
        )

    @kind
    def ceph_keyring() -> Paste:
        val = "AQ" + v.chars(string.ascii_letters + string.digits + "+/", 38) + "=="
        return Paste(
            "ceph keyring",
            f'[client.libvirt]\n\tkey = {val}\n\tcaps mon = "profile rbd"\n',
            [val],
            ["[client.libvirt]", 'caps mon = "profile rbd"'],
        )

    @kind
    def libvirt_vnc() -> Paste:
        pw = v.password(symbols="")
        return Paste(
            "libvirt VNC passwd",
            f"<graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0' passwd='{pw}'/>",
            [pw],
            ["<graphics type='vnc' port='-1' autoport='yes'"],
        )

    @kind
    def kcli_password() -> Paste:
        pw = v.password()
        return Paste(
            "kcli --password",
            f"kcli create vm -i rhel9 -P rootpassword={pw} -P memory=8192 idm01",
            [pw],
            ["-P memory=8192 idm01"],
        )

    # ------------------------------------------------------------------ network devices
    @kind
    def cisco_config() -> Paste:
        en, com, user, tac = (
            v.password(symbols=""),
            v.alnum(14),
            v.password(symbols=""),
            v.alnum(16),
        )
        text = (
            "hostname lab-core01\n!\n"
            f"enable secret 0 {en}\nusername netops privilege 15 secret 0 {user}\n"
            f"snmp-server community {com} RO\ntacacs-server host 10.0.0.5 key 0 {tac}\n"
            "interface GigabitEthernet0/1\n description uplink\n"
        )
        return Paste(
            "Cisco IOS config",
            text,
            [en, com, user, tac],
            ["hostname lab-core01", "description uplink", " RO\n"],
        )

    @kind
    def cisco_enable_password() -> Paste:
        pw = v.password(symbols="")
        return Paste(
            "enable password",
            f"lab-sw01(config)# enable password {pw}",
            [pw],
            ["lab-sw01(config)# enable password "],
        )

    @kind
    def vyos_config() -> Paste:
        pw, psk, com = v.password(), v.alnum(32), v.alnum(12)
        wg = v.b64(32)
        text = (
            f"set system login user vyos authentication plaintext-password '{pw}'\n"
            f"set vpn ipsec site-to-site peer 203.0.113.5 authentication pre-shared-secret '{psk}'\n"
            f"set service snmp community {com} authorization 'ro'\nset interfaces wireguard wg0 private-key '{wg}'\n"
            "set interfaces ethernet eth0 address '192.168.1.1/24'\n"
        )
        return Paste(
            "VyOS config",
            text,
            [pw, psk, com, wg],
            ["set interfaces ethernet eth0 address '192.168.1.1/24'"],
        )

    @kind
    def nmcli_wifi() -> Paste:
        pw = v.password()
        return Paste(
            "nmcli password",
            f"nmcli device wifi connect LabNet password {pw} ifname wlp2s0",
            [pw],
            ["nmcli device wifi connect LabNet password ", "ifname wlp2s0"],
        )

    @kind
    def nmcli_psk() -> Paste:
        pw = v.password()
        return Paste(
            "nmcli wifi-sec.psk",
            f"nmcli con modify lab-wifi wifi-sec.key-mgmt wpa-psk wifi-sec.psk '{pw}'",
            [pw],
            ["wifi-sec.key-mgmt wpa-psk"],
        )

    @kind
    def wireguard_conf() -> Paste:
        key, psk = v.b64(32), v.b64(32)
        text = f"[Interface]\nAddress = 10.8.0.2/24\nPrivateKey = {key}\n\n[Peer]\nPublicKey = {v.b64(32)}\nPresharedKey = {psk}\nEndpoint = vpn.lab:51820\n"
        return Paste(
            "WireGuard config",
            text,
            [key, psk],
            ["Address = 10.8.0.2/24", "Endpoint = vpn.lab:51820"],
        )

    @kind
    def openssl_pass() -> Paste:
        pw = v.password()
        return Paste(
            "openssl -passout pass:",
            f"openssl pkcs12 -export -in idm.crt -inkey idm.key -out idm.p12 -passout pass:{pw}",
            [pw],
            ["-out idm.p12 -passout pass:"],
        )

    @kind
    def step_ca() -> Paste:
        pw = v.password()
        return Paste(
            "step-ca password",
            f"echo {pw} > /etc/step/password.txt\nstep ca init --name=lab --password-file=/etc/step/password.txt",
            [pw],
            ["step ca init --name=lab --password-file=/etc/step/password.txt"],
        )

    # ------------------------------------------------------------------ shell history / misc
    @kind
    def shell_history() -> Paste:
        p1, p2, p3 = v.password(), v.password(), v.password()
        tok = "glpat-" + v.alnum(20)
        text = (
            "  501  sudo dnf install -y git ansible-core\n"
            f"  502  export RHSM_PASSWORD='{p1}'\n"
            f"  503  subscription-manager register --username lab-user --password {p2}\n"
            f"  504  git clone https://oauth2:{tok}@gitlab.lab/infra/qubinode.git\n"
            f"  505  mysql -uroot -p{p3} -e 'show databases'\n"
            "  506  ./setup.sh --full\n"
        )
        return Paste(
            "shell history",
            text,
            [p1, p2, p3, tok],
            [
                "sudo dnf install -y git ansible-core",
                "./setup.sh --full",
                "subscription-manager register --username lab-user --password ",
            ],
        )

    @kind
    def subscription_manager() -> Paste:
        key = v.alnum(20)
        return Paste(
            "subscription-manager activation key",
            f"subscription-manager register --org=1234567 --activationkey={key}",
            [key],
            ["--org=1234567"],
        )

    @kind
    def terraform_tfvars() -> Paste:
        tok, pw = v.alnum(14) + ".atlasv1." + v.alnum(60), v.password()
        text = f'token = "{tok}"\nvsphere_password = "{pw}"\nvsphere_user = "administrator@vsphere.local"\n'
        return Paste(
            "terraform tfvars", text, [tok, pw], ['vsphere_user = "administrator@vsphere.local"']
        )

    @kind
    def python_dict_repr() -> Paste:
        pw = v.password()
        return Paste(
            "Python dict repr",
            f"DEBUG connect kwargs: {{'host': 'idm.lab', 'user': 'admin', 'password': '{pw}', 'port': 636}}",
            [pw],
            ["'host': 'idm.lab'", "'port': 636"],
        )

    @kind
    def sql_identified_by() -> Paste:
        pw = v.password()
        return Paste(
            "SQL IDENTIFIED BY",
            f"CREATE USER 'grafana'@'%' IDENTIFIED BY '{pw}';",
            [pw],
            ["CREATE USER 'grafana'@'%' IDENTIFIED BY '"],
        )

    @kind
    def smtp_url() -> Paste:
        pw = v.url_password()
        return Paste(
            "SMTP URL",
            f"EMAIL_URL=smtp://alerts%40lab.example.com:{pw}@smtp.lab:587",
            [pw],
            ["@smtp.lab:587"],
        )

    @kind
    def age_key() -> Paste:
        key = "AGE-SECRET-KEY-1" + v.chars("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)
        return Paste(
            "age secret key",
            f"# created: 2024-05-01T10:00:00Z\n# public key: age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq\n{key}",
            [key],
            ["# created: 2024-05-01T10:00:00Z"],
        )

    @kind
    def sendgrid() -> Paste:
        key = "SG." + v.b64url(16) + "." + v.b64url(32)
        return Paste("SendGrid key", f"SENDGRID_API_KEY={key}", [key])

    @kind
    def password_prompt_echo() -> Paste:
        pw = v.password()
        return Paste(
            "password in YAML list",
            f'users:\n  - name: airflow\n    password: "{pw}"\n    groups: [admins]\n',
            [pw],
            ["- name: airflow", "groups: [admins]"],
        )

    return out


def generate(seed: int) -> list[Paste]:
    """The corpus for one seed (same seed, same values)."""
    rng = random.Random(seed)
    values = _Values(rng)
    return [build() for build in _kinds(values)]


# Text that looks a bit like a secret but is not one: each must come back unchanged.
NEAR_MISSES: list[str] = [
    'FATAL:  password authentication failed for user "airflow"',
    "openai: max_tokens=512 exceeded the context window",
    "signature: bash",
    "error signature: bash: line 1: kcli: command not found",
    "Invalid token: expired at 2024-05-01T10:00:00Z",
    "token expired",
    "--password-file /etc/qubinode/ipa.pw was not readable",
    "ansible-playbook site.yml --vault-password-file ~/.vault_pass --vault-id dev@prompt",
    "valueFrom:\n  secretKeyRef:\n    name: airflow-db\n    key: password",
    "secret_key_ref: airflow-webserver-secret",
    "secretName: harbor-tls",
    "403 Authorization failed for user admin",
    "Authorization: failed",
    "run_id=scheduled__2024-05-01T10:00:00+00:00 task_id=get_token try_number=2",
    "commit 3f2a9c1d7e8b4a6f0c5d2e1b9a8f7c6d5e4b3a21",
    "HEAD is now at 9fceb02 fix: rotate the token on expiry",
    "request_id=7c9e6679-7425-40de-944b-e07fc1f90ae7 finished",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  rhel-9.4-x86_64-boot.iso",
    "image: quay.io/qubinode/airflow@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
    "sshKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPx2Zk8a3sN6q0bKc1mWQp7yTr5eLh9uJ4dVf2GgHwXo admin@bastion'",
    "NoCredentialsError: Unable to locate credentials",
    'Error from server (NotFound): secrets "pull-secret" not found',
    "PWD=/home/admin/qubinode_navigator ./setup.sh",
    "lab-user ALL=(ALL) NOPASSWD:ALL",
    "token_type: bearer",
    "tokens used: 4096",
    "num_tokens=1843",
    "password_file: /run/secrets/db_password",
    "kubectl create secret generic db --from-file=password=./pw.txt",
    "ERROR: password: <YOUR_PASSWORD> is a placeholder, set it in vault.yml",
    'rhsm_password: "{{ vault_rhsm_password }}"',
    "export VAULT_TOKEN=$(cat ~/.vault-token)",
    "api_key: os.environ/OPENAI_API_KEY",
    "AIRFLOW__CORE__FERNET_KEY_CMD=cat /run/secrets/fernet",
    "ssh: connect to host 192.168.122.10 port 22: Connection refused",
    "Authentication token manipulation error",
    "The password for user admin was changed",
    "Enter your password:",
    "keytab: /etc/krb5.keytab",
    "vault_client = hvac.Client(url=vault_addr, token=vault_token)",
    "password=encrypt(value),  # Fernet encryption",
    "def store_credential(self, repo_url: str, credential_type: str, value: str):",
    "uid: 5b1f0c3e-8d2a-4c7b-9e6f-1a2b3c4d5e6f",
    "certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM1ekNDQWMrZ0F3SUJBZ0lCQVRBTkJna3Foa2lHOXcwQkFRc0ZBREFWTVJNd0VRWURWUVFERXdwdGFXNXAKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
    "integrity: sha512-Q2r8zO0X1+E0bUv2Yk4nQ==",
]
