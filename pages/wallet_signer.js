// Wallet page: sign the issued EIP-4361 message with an injected wallet (window.ethereum, EIP-1193).
export default function (component) {
  const { setTriggerValue, parentElement, data } = component;
  const button = parentElement.querySelector("#sign");
  const status = parentElement.querySelector("#status");
  button.onclick = async () => {
    if (!window.ethereum) {
      status.textContent = "No injected wallet (window.ethereum) in this browser: paste a signature below instead.";
      return;
    }
    try {
      status.textContent = "Waiting for the wallet...";
      const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
      const account = accounts.find((a) => a.toLowerCase() === data.address.toLowerCase()) || accounts[0];
      const hex = "0x" + Array.from(new TextEncoder().encode(data.message))
        .map((b) => b.toString(16).padStart(2, "0")).join("");
      const signature = await window.ethereum.request({ method: "personal_sign", params: [hex, account] });
      status.textContent = "Signed by " + account;
      setTriggerValue("signed", { signature: signature, account: account });
    } catch (err) {
      status.textContent = "The wallet did not sign: " + (err && err.message ? err.message : err);
    }
  };
}
