// Checkout: create the order, keep its token in this tab, go to its status page.
"use strict";

const form = document.getElementById("checkout-form");
const errorBox = document.getElementById("checkout-error");

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  const data = new FormData(form);
  const body = {
    amount: Number(data.get("amount")),
    customer: {
      email: data.get("email"),
      firstName: data.get("firstName"),
      lastName: data.get("lastName"),
    },
  };
  if (data.get("phone")) body.phone = data.get("phone");
  let response;
  try {
    response = await fetch("/api/orders", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    showError("Could not reach the server. Please try again.");
    return;
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    showError(answer.error || `The order could not be created (${response.status}).`);
    return;
  }
  // The token goes in the fragment, which browsers never send to the server.
  sessionStorage.setItem(`order:${answer.orderId}`, JSON.stringify({
    token: answer.accessToken, version: answer.version, orderNumber: answer.orderNumber,
    order: { ...answer, accessToken: undefined }, // the order page shows it at once
  }));
  location.assign(`/orders/${answer.orderId}#token=${encodeURIComponent(answer.accessToken)}`);
});
