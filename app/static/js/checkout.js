// Checkout: check the form as the API does (app/orders/schemas.py), showing every field's
// error at once next to it; create the order, keep its token in this tab, go to its page.
// The API names every wrong field of a 400 too (errors: [{field, message}]), shown the same way.
"use strict";

const form = document.getElementById("checkout-form");
const errorBox = document.getElementById("checkout-error");

const MAX_AMOUNT = 10000000;
// The API's patterns: what people type may come with spaces around it.
const EMAIL = /^ *[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+\.[^@\x00-\x20\x7f]+ *$/;
const NON_BLANK_TEXT = /^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f ][^\x00-\x1f\x7f]*$/;
const PHONE = /^ *\+?[0-9]{9,15} *$/;
// The API's field names -> the form's.
const FIELDS = {
  amount: "amount",
  "customer.email": "email",
  "customer.firstName": "firstName",
  "customer.lastName": "lastName",
  phone: "phone",
};

function length(value) {
  return [...value].length; // characters, as the API counts them
}

function checkText(value, max, pattern, label) {
  if (!value.trim()) return `${label} is required.`;
  if (length(value) > max) return `${label} must be at most ${max} characters.`;
  if (!pattern.test(value)) return `${label} is not valid.`;
  return null;
}

function check(data, amountInput) {
  const errors = {};
  const amount = data.get("amount");
  if (amountInput.validity.badInput) errors.amount = "Amount must be a number.";
  else if (!amount.trim()) errors.amount = "Amount is required.";
  else if (!(Number(amount) >= 0.01)) errors.amount = "Amount must be at least 0.01.";
  else if (Number(amount) > MAX_AMOUNT) errors.amount = `Amount must be at most ${MAX_AMOUNT.toLocaleString()}.`;
  const email = checkText(data.get("email"), 254, EMAIL, "Email");
  if (email) errors.email = email.endsWith("not valid.") ? "Enter an email address like name@example.com." : email;
  const first = checkText(data.get("firstName"), 100, NON_BLANK_TEXT, "First name");
  if (first) errors.firstName = first;
  const last = checkText(data.get("lastName"), 100, NON_BLANK_TEXT, "Last name");
  if (last) errors.lastName = last;
  const phone = data.get("phone");
  if (phone && (length(phone) > 18 || !PHONE.test(phone))) {
    errors.phone = "Phone must be 9 to 15 digits, optionally after a +, like 254712345678.";
  }
  return errors;
}

function showErrors(errors) {
  for (const box of form.querySelectorAll(".field-error")) {
    const message = errors[box.dataset.field];
    box.textContent = message || "";
    box.hidden = !message;
    form.elements[box.dataset.field].setAttribute("aria-invalid", String(Boolean(message)));
  }
  const first = Object.keys(FIELDS).map((f) => FIELDS[f]).find((name) => errors[name]);
  if (first) form.elements[first].focus();
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

// A 400's errors by form field; what names no field of the form goes in the box below.
function fromAnswer(answer) {
  const errors = {};
  const other = [];
  for (const { field, message } of answer.errors || []) {
    const name = FIELDS[field];
    if (name) errors[name] = errors[name] || `${message[0].toUpperCase()}${message.slice(1)}.`;
    else other.push(`${field} ${message}`);
  }
  return { errors, other };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  const data = new FormData(form);
  const errors = check(data, form.elements.amount);
  showErrors(errors);
  if (Object.keys(errors).length) return;
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
    const { errors: named, other } = fromAnswer(answer);
    showErrors(named);
    if (other.length || !Object.keys(named).length) {
      showError(other.join("; ") || answer.error || `The order could not be created (${response.status}).`);
    }
    return;
  }
  // The token goes in the fragment, which browsers never send to the server.
  sessionStorage.setItem(`order:${answer.orderId}`, JSON.stringify({
    token: answer.accessToken, version: answer.version, orderNumber: answer.orderNumber,
    order: { ...answer, accessToken: undefined }, // the order page shows it at once
  }));
  location.assign(`/orders/${answer.orderId}#token=${encodeURIComponent(answer.accessToken)}`);
});
